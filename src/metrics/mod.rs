//! The run summary: counts, throughput and latency statistics computed from per-request
//! records, with one percentile method. Pure functions, no I/O.
