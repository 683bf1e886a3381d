//! Sources: where series come from (range queries split into windows,
//! `/api/v1/export` streams, VictoriaLogs stats, bundle files). They use
//! `client` and `model` and hand series on as they arrive.

pub mod query;
pub mod vm_export;
