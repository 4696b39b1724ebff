//! Getting a trace file: fetch public traces by name, convert between formats, synthesise.
//!
//! - [`catalog`]: the public traces known by name;
//! - [`fetch`]: downloads into the cache, resumable and checksum-verified;
//! - [`convert`]: writes records in any format we read;
//! - [`synth`]: seeded synthetic traces.

pub mod catalog;
pub mod convert;
pub mod fetch;
pub mod synth;
