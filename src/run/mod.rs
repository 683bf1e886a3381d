//! `spillway run`: continuous threshold export. The vmalert rule-file
//! loader that `run`, `replay` and `rules check` share, and the evaluation
//! engine: `schedule` (aligned timestamps, clock), `eval` (what a rule makes
//! of a result), `datasource` (queries as vmalert sends them), `group` (one
//! task per group: concurrency, catch-up), `engine` (start, reload,
//! shutdown, the [`ResultSink`] seam), `state` (`/api/v1/rules`) and
//! `replay` (backfill over a past range).

pub mod config;
pub mod datasource;
pub mod engine;
pub mod eval;
mod group;
pub mod replay;
pub mod rules;
pub mod schedule;
pub mod state;

#[cfg(test)]
mod tests;

pub use datasource::{ClientDatasource, Datasource, QueryError, RuleQuery};
pub use engine::{
    preview, Engine, EngineError, EngineHandle, EngineOptions, MemorySink, PreviewRule,
    ReloadSummary, ResultSink,
};
pub use replay::{replay, ReplayOptions, ReplayProgress, ReplayReport};
pub use schedule::{Clock, Schedule, SystemClock, TokioClock};
pub use state::GroupsState;
