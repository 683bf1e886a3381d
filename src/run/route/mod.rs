//! Routing: the one way series enter the destinations of `spillway run`,
//! whether they come from the receiver (`/api/v1/write`, `/api/v1/import`)
//! or from the rule engine's evaluations.
//!
//! ```text
//! route(batch) ─► global_relabel_configs ─► external_labels ─┬─► destination A: accept (relabel, encode, queue)
//!                                                            └─► destination B: accept ...
//! ```
//!
//! [`Pipeline::route`] returns once every destination has the batch on
//! disk (or reports which could not take it), so a caller that gets `Ok`
//! may forget the batch: from here on delivery is the destinations' job
//! (at-least-once, see [`crate::sink::destination`]). A caller that gets
//! `Err` should retry the whole batch later (a receiver answers 503 so its
//! client does); destinations that had already taken it then hold it twice,
//! which is harmless downstream.
//!
//! Relabeling works as in vmagent's remote-write path: after the rules,
//! labels starting with `__` (other than `__name__`) are removed, and a
//! series left without labels is dropped. External labels follow
//! Prometheus: added to a series that does not have the label already. They are applied after global relabeling, and a
//! destination's own `external_labels` after its own relabeling.
//!
//! Breach captures hook in twice: a [`BatchObserver`] sees every batch of
//! rule results after global relabeling (a capture's `if:` selector is
//! written against those labels), and [`Pipeline::route_to`] takes the raw
//! samples a capture copied to the destinations it names. Those go through
//! each destination's relabeling, external labels and queue, but not
//! through `global_relabel_configs` or the run's `external_labels`: those
//! are written for rule results, and raw data keeps its own labels.
//!
//! The parts: [`check`] turns the config into a [`PipelineConfig`] (and
//! [`events`] checks what event types and schedules add); [`pipeline`] is
//! the [`Pipeline`] callers route through; [`fanout`] is what one batch
//! goes through; [`reload`] swaps the routing on a config reload;
//! [`preview`] routes without sending; [`api`] is the HTTP view.

mod api;
mod check;
mod events;
mod fanout;
mod pipeline;
mod preview;
mod reload;
#[cfg(test)]
mod tests;

pub use api::api_router;
pub(crate) use check::{check_labels, compile_relabel};
pub use check::{load, PipelineConfig, DEFAULT_STORAGE_PATH, MAX_DESTINATION_NAME_BYTES};
pub use pipeline::{BatchObserver, Pipeline, RouteError};
pub use preview::{dry_route, dry_route_events};
pub use reload::RoutingChange;
