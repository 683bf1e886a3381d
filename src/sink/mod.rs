//! Sinks: where series end up. File sinks for `export` (CSV, JSON, JSONL,
//! SQLite, Parquet), and `atomic` for files that appear only when complete.

pub mod atomic;
pub mod file;
pub mod zip;
