//! Sinks: where series end up. File sinks for `export` (CSV, JSON, JSONL,
//! SQLite, Parquet), `destination` for the queued remote-write / VM-import
//! destinations of `run`, and `atomic` for files that appear only when
//! complete.

pub mod atomic;
pub mod destination;
pub mod file;
pub mod zip;
