//! Getting a trace file: fetch public traces by name, convert between formats, synthesise.
//!
//! - [`catalog`]: the public traces known by name;
//! - [`fetch`]: downloads into the cache, resumable and checksum-verified.

pub mod catalog;
pub mod fetch;
