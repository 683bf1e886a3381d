//! Where exported series come from: which rule of which group made them,
//! as what (a recording rule's result, an alert, a breach capture's raw
//! copy, or data received over the write API), and for alerts the rendered
//! annotations of each series. Metric destinations (remote write, VM
//! import) ignore all of this; event destinations (SIEMs, log pipelines)
//! put it in every event, and breach captures read the rule and group to
//! decide which breaches open a capture.

use super::wire::{WireForm, NO_SPAN};
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
/// batch keeps the two aligned (see [`ExportBatch::retain_mut`]). So does
/// `wire`, the encoding received series came in (remote write only).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportBatch {
    pub origin: Origin,
    pub series: Vec<Series>,
    pub annotations: Vec<Option<Annotations>>,
    pub wire: Option<WireForm>,
}

impl ExportBatch {
    pub fn new(origin: Origin, series: Vec<Series>) -> ExportBatch {
        ExportBatch {
            origin,
            series,
            annotations: Vec::new(),
            wire: None,
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
    /// `keep` may change a series, so every kept one loses its wire form.
    pub fn retain_mut(&mut self, mut keep: impl FnMut(&mut Series) -> bool) {
        self.retain_marking(|s| keep(s).then_some(true))
    }

    /// [`ExportBatch::retain_mut`] for a `keep` that knows what it did:
    /// `None` drops the series, `Some(changed)` keeps it, and only a
    /// changed one loses its wire form.
    pub fn retain_marking(&mut self, mut keep: impl FnMut(&mut Series) -> Option<bool>) {
        let annotated = !self.annotations.is_empty();
        if annotated {
            self.annotations.resize(self.series.len(), None);
        }
        if self
            .wire
            .as_ref()
            .is_some_and(|w| w.spans.len() != self.series.len())
        {
            self.wire = None;
        }
        let mut spans = self.wire.as_mut().map(|w| &mut w.spans);
        let annotations = &mut self.annotations;
        let (mut i, mut kept) = (0, 0);
        self.series.retain_mut(|s| {
            let verdict = keep(s);
            if let Some(changed) = verdict {
                // Moving entry i down to `kept` (<= i): what it swaps up
                // belongs to a dropped series and is never read again.
                if annotated {
                    annotations.swap(kept, i);
                }
                if let Some(spans) = spans.as_deref_mut() {
                    spans[kept] = if changed { NO_SPAN } else { spans[i] };
                }
                kept += 1;
            }
            i += 1;
            verdict.is_some()
        });
        if annotated {
            self.annotations.truncate(kept);
        }
        if let Some(w) = &mut self.wire {
            w.spans.truncate(kept);
        }
    }

    /// A view for the destinations: origin and annotations without the series.
    pub fn meta(&self) -> BatchMeta<'_> {
        BatchMeta {
            origin: &self.origin,
            annotations: &self.annotations,
            wire: self.wire.as_ref(),
        }
    }
}

/// What a destination needs besides the series themselves.
#[derive(Clone, Copy, Debug)]
pub struct BatchMeta<'a> {
    pub origin: &'a Origin,
    /// Empty, or one entry per series of the batch it belongs to.
    pub annotations: &'a [Option<Annotations>],
    /// The series' encoding as received, if they came by remote write.
    pub wire: Option<&'a WireForm>,
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

    #[test]
    fn retain_marking_keeps_spans_aligned_and_forgets_changed_series() {
        let mut b = ExportBatch::received(vec![s("a"), s("b"), s("c"), s("d")]);
        b.wire = Some(WireForm {
            message: b"aabbccdd".to_vec(),
            spans: vec![(0, 2), (2, 4), (4, 6), (6, 8)],
        });
        b.retain_marking(|s| match s.labels.metric_name() {
            "a" => None,
            "b" => Some(false),
            "c" => {
                s.labels.set("x", "1");
                Some(true)
            }
            _ => Some(false),
        });
        let wire = b.wire.as_ref().unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(wire.series_bytes(0), Some(&b"bb"[..]));
        assert_eq!(
            wire.series_bytes(1),
            None,
            "a changed series is encoded again"
        );
        assert_eq!(wire.series_bytes(2), Some(&b"dd"[..]));
        b.retain_mut(|_| true);
        assert!(
            (0..3).all(|i| b.wire.as_ref().unwrap().series_bytes(i).is_none()),
            "retain_mut may change anything"
        );
    }

    #[test]
    fn spans_that_do_not_match_the_series_are_dropped_not_trusted() {
        let mut b = ExportBatch::received(vec![s("a"), s("b")]);
        b.wire = Some(WireForm {
            message: b"aa".to_vec(),
            spans: vec![(0, 2)],
        });
        b.retain_marking(|_| Some(false));
        assert_eq!(b.wire, None);
    }
}
