//! Sinks: where series end up. File sinks for `export` (CSV, JSON, JSONL,
//! SQLite, Parquet), `destination` for the queued remote-write / VM-import
//! destinations of `run`. Files appear only when complete through
//! [`crate::fsutil::AtomicFile`].

pub mod destination;
pub mod file;
pub mod zip;
