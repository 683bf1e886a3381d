//! Sinks: where series end up. File sinks for `export` (CSV, JSON, JSONL,
//! SQLite, Parquet), `destination` for the queued destinations of `run`
//! (remote write, VM import, and the `event` types for SIEMs and log
//! pipelines) and `schedule` for their time windows. Files appear only when
//! complete through [`crate::fsutil::AtomicFile`].

pub mod destination;
pub mod event;
pub mod file;
pub mod schedule;
pub mod zip;
