//! spillway: export time series out of VictoriaMetrics, Prometheus and
//! VictoriaLogs when thresholds are crossed, and route them where they belong.
//!
//! Layers, each using only those below it:
//! commands (`export`) → `source`, `transform`, `sink` → `client` → `model`.

pub mod model;
