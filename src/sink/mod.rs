//! Sinks: where series end up. File sinks for `export` (CSV, JSON, JSONL,
//! SQLite, Parquet), `destination` for the queued destinations of `run`
//! (remote write, VM import, and the `event` types for SIEMs and log
//! pipelines), `schedule` for their time windows, and `atomic` for files
//! that appear only when complete.

pub mod atomic;
pub mod destination;
pub mod event;
pub mod file;
pub mod schedule;
pub mod zip;
