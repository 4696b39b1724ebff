//! Getting a trace file: fetch public traces by name, convert between formats, synthesise.
