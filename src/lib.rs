//! spillway: export time series out of VictoriaMetrics, Prometheus and
//! VictoriaLogs when thresholds are crossed, and route them where they belong.
//!
//! Layers, each using only those below it:
//! `cli` → commands (`export`, `bundle`) → `source`, `transform`, `sink` → `client` → `model`.
//! `fsutil` (durable files, locks) and `output` (stdout/stderr that never
//! panic) are leaves every layer may use, the queue included.

pub mod blocking;
pub mod budget;
pub mod build_info;
pub mod bundle;
pub mod cli;
pub mod client;
pub mod codec;
pub mod export;
pub mod fsutil;
pub mod model;
pub mod output;
pub mod queue;
pub mod run;
pub mod server;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod transform;
pub mod ui;
