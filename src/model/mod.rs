//! Plain data shared by every mode: labels, samples, series, batches,
//! series selectors and time. Nothing here does I/O.

pub mod goregex;
pub mod labels;
pub mod selector;
pub mod series;
pub mod size;
pub mod time;
pub mod yaml;

pub use labels::{Label, Labels};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use series::{Batch, Sample, Series, STALE_NAN_BITS};
