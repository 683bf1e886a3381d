//! Where exported series come from: which rule of which group made them,
//! as what (a recording rule's result, an alert, a breach capture's raw
//! copy, or data received over the write API), and for alerts the rendered
//! annotations of each series. Metric destinations (remote write, VM
//! import) ignore all of this; event destinations (SIEMs, log pipelines)
//! put it in every event, and breach captures read the rule and group to
//! decide which breaches open a capture.

use super::Series;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What kind of export a batch is; the `type` of an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// A recording rule's result (and its stale markers).
    Recording,
    /// An alerting rule's `ALERTS` / `ALERTS_FOR_STATE` series.
    Alert,
    /// Raw samples copied around a breach by a capture.
    Capture,
    /// Series received on `/api/v1/write` or `/api/v1/import`.
    #[default]
    Received,
}

impl ExportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Recording => "recording",
            ExportKind::Alert => "alert",
            ExportKind::Capture => "capture",
            ExportKind::Received => "received",
        }
    }
}

/// The rule (or capture) behind a batch. Cheap to clone: names are shared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub kind: ExportKind,
    /// Group name; empty for received data.
    pub group: Arc<str>,
    /// `record:` / `alert:` name; empty for received data.
    pub rule: Arc<str>,
    /// The capture's name, for `ExportKind::Capture`.
    pub capture: Option<Arc<str>>,
}

impl Origin {
    /// Data that came in over the write API: no rule, no group.
    pub fn received() -> Origin {
        Origin::default()
    }

    pub fn rule(kind: ExportKind, group: &str, rule: &str) -> Origin {
        Origin {
            kind,
            group: Arc::from(group),
            rule: Arc::from(rule),
            capture: None,
        }
    }
}

/// An alert's rendered annotations (`summary`, `description`, ...).
pub type Annotations = Arc<BTreeMap<String, String>>;

/// A batch of series on its way to the destinations, with where it came
/// from. `annotations` is either empty (no series has any) or holds one
/// entry per series, in the same order; whoever removes series from the
/// batch keeps the two aligned (see [`ExportBatch::retain_mut`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportBatch {
    pub origin: Origin,
    pub series: Vec<Series>,
    pub annotations: Vec<Option<Annotations>>,
}

impl ExportBatch {
    pub fn new(origin: Origin, series: Vec<Series>) -> ExportBatch {
        ExportBatch {
            origin,
            series,
            annotations: Vec::new(),
        }
    }

    pub fn received(series: Vec<Series>) -> ExportBatch {
        ExportBatch::new(Origin::received(), series)
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn sample_count(&self) -> usize {
        super::series::sample_count(&self.series)
    }

    /// The annotations of the `i`th series, if it has any.
    pub fn annotations_of(&self, i: usize) -> Option<&Annotations> {
        self.annotations.get(i).and_then(Option::as_ref)
    }

    /// `Vec::retain_mut` over the series, keeping `annotations` aligned.
    pub fn retain_mut(&mut self, mut keep: impl FnMut(&mut Series) -> bool) {
        if self.annotations.is_empty() {
            self.series.retain_mut(keep);
            return;
        }
        let mut annotations = std::mem::take(&mut self.annotations).into_iter();
        let mut kept = Vec::with_capacity(annotations.len());
        self.series.retain_mut(|s| {
            let a = annotations.next().flatten();
            let k = keep(s);
            if k {
                kept.push(a);
            }
            k
        });
        self.annotations = kept;
    }

    /// A view for the destinations: origin and annotations without the series.
    pub fn meta(&self) -> BatchMeta<'_> {
        BatchMeta {
            origin: &self.origin,
            annotations: &self.annotations,
        }
    }
}

/// What a destination needs besides the series themselves.
#[derive(Clone, Copy, Debug)]
pub struct BatchMeta<'a> {
    pub origin: &'a Origin,
    /// Empty, or one entry per series of the batch it belongs to.
    pub annotations: &'a [Option<Annotations>],
}

impl BatchMeta<'_> {
    pub fn annotations_of(&self, i: usize) -> Option<&Annotations> {
        self.annotations.get(i).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, Sample};

    fn s(name: &str) -> Series {
        Series::new(
            Labels::from_pairs([("__name__", name)]),
            vec![Sample::new(1, 1.0)],
        )
    }

    #[test]
    fn retain_keeps_annotations_aligned() {
        let note = |t: &str| {
            Some(Arc::new(BTreeMap::from([(
                "summary".to_string(),
                t.to_string(),
            )])))
        };
        let mut b = ExportBatch::new(
            Origin::rule(ExportKind::Alert, "g", "r"),
            vec![s("a"), s("b"), s("c")],
        );
        b.annotations = vec![note("a"), None, note("c")];
        b.retain_mut(|s| s.labels.get("__name__") != Some("a"));
        assert_eq!(b.len(), 2);
        assert_eq!(b.annotations_of(0), None);
        assert_eq!(b.annotations_of(1).unwrap()["summary"], "c");
    }

    #[test]
    fn retain_without_annotations_stays_empty() {
        let mut b = ExportBatch::received(vec![s("a"), s("b")]);
        b.retain_mut(|s| s.labels.get("__name__") == Some("b"));
        assert_eq!(b.len(), 1);
        assert!(b.annotations.is_empty());
        assert_eq!(b.meta().annotations_of(0), None);
    }
}
