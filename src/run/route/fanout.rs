//! What one batch goes through on its way to the destinations: the global
//! stage (global relabeling, the run's external labels), then each
//! destination's accept with its schedule applied (samples outside a
//! schedule dropped or handed to a fallback destination). Kept apart from
//! [`super::Pipeline`] because it is plain blocking work on one routing
//! snapshot, with no locks or async, so a reload can swap it whole.

use crate::model::{ExportBatch, Series};
use crate::sink::destination::{
    self, Destination, DestinationConfig, DestinationError, DropReason,
};
use crate::sink::schedule::{Outside, Schedule};
use crate::transform::relabel::RelabelRules;
use std::sync::Arc;

/// One configuration of the pipeline.
pub(super) struct Routing {
    pub(super) global: Arc<GlobalStage>,
    pub(super) destinations: Arc<Vec<Arc<Destination>>>,
    /// Per destination, the config it was opened with.
    pub(super) configs: Vec<DestinationConfig>,
}

impl Routing {
    /// Every destination's accept, with schedules applied: samples outside
    /// a destination's windows are dropped (counted) or handed, as that
    /// destination would send them (its relabeling and external labels
    /// applied), to its fallback, which sends them as they are (neither its
    /// own relabeling nor its schedule apply to them). Destinations with
    /// `on_full: block` are offered the batch first: when one of them is
    /// full the batch goes nowhere else either, so the retry that follows
    /// does not duplicate it in the others.
    pub(super) fn accept(&self, batch: &ExportBatch) -> Vec<DestinationError> {
        let mut order: Vec<usize> = (0..self.destinations.len()).collect();
        order.sort_by_key(|&i| self.destinations[i].on_full() != destination::OnFullPolicy::Block);
        let mut errors = Vec::new();
        for i in order {
            self.accept_one(&self.destinations[i], &self.configs[i], batch, &mut errors);
            if errors
                .iter()
                .any(|e| matches!(e, DestinationError::Full { .. }))
            {
                break;
            }
        }
        errors
    }

    fn accept_one(
        &self,
        d: &Arc<Destination>,
        cfg: &DestinationConfig,
        batch: &ExportBatch,
        errors: &mut Vec<DestinationError>,
    ) {
        let Some(route) = &cfg.schedule else {
            errors.extend(d.accept_with(&batch.series, batch.meta()).err());
            return;
        };
        let Some((inside, outside)) = split_by_schedule(batch, &route.schedule) else {
            errors.extend(d.accept_with(&batch.series, batch.meta()).err());
            return;
        };
        if !inside.is_empty() {
            errors.extend(d.accept_with(&inside.series, inside.meta()).err());
        }
        let outside_samples = outside.sample_count() as u64;
        let fallback = match &route.outside {
            Outside::Drop => None,
            Outside::Fallback(name) => self.destinations.iter().find(|f| f.name() == name),
        };
        let Some(fallback) = fallback else {
            d.count_dropped(DropReason::Schedule, outside_samples);
            return;
        };
        let mut handed = outside;
        let mut filtered = 0u64;
        handed.retain_mut(|s| match d.relabeled_labels(&s.labels) {
            Some(l) => {
                s.labels = l;
                true
            }
            None => {
                filtered += s.samples.len() as u64;
                false
            }
        });
        d.count_dropped(DropReason::Relabel, filtered);
        if !handed.is_empty() {
            errors.extend(fallback.accept_as_is(&handed.series, handed.meta()).err());
        }
    }
}

/// The batch cut by `schedule` into (inside, outside); `None` when every
/// sample is inside (the common case costs no copy).
fn split_by_schedule(
    batch: &ExportBatch,
    schedule: &Schedule,
) -> Option<(ExportBatch, ExportBatch)> {
    let all_in = batch
        .series
        .iter()
        .all(|s| s.samples.iter().all(|p| schedule.contains(p.timestamp_ms)));
    if all_in {
        return None;
    }
    let mut inside = ExportBatch::new(batch.origin.clone(), Vec::new());
    let mut outside = ExportBatch::new(batch.origin.clone(), Vec::new());
    let annotated = !batch.annotations.is_empty();
    for (i, s) in batch.series.iter().enumerate() {
        let (a, b): (Vec<_>, Vec<_>) = s
            .samples
            .iter()
            .partition(|p| schedule.contains(p.timestamp_ms));
        for (part, samples) in [(&mut inside, a), (&mut outside, b)] {
            if samples.is_empty() {
                continue;
            }
            part.series.push(Series::new(s.labels.clone(), samples));
            if annotated {
                part.annotations.push(batch.annotations_of(i).cloned());
            }
        }
    }
    Some((inside, outside))
}

/// Global relabeling and run-level external labels.
#[derive(Debug)]
pub(super) struct GlobalStage {
    pub(super) rules: RelabelRules,
    pub(super) external_labels: Vec<(String, String)>,
}

impl GlobalStage {
    /// Applies both (external labels only when `external_labels`) in
    /// place; returns the samples of the series relabeling dropped.
    pub(super) fn apply(
        &self,
        mut batch: ExportBatch,
        external_labels: bool,
    ) -> (ExportBatch, u64) {
        let external: &[(String, String)] = if external_labels {
            &self.external_labels
        } else {
            &[]
        };
        if self.rules.is_empty() && external.is_empty() {
            return (batch, 0);
        }
        let mut dropped = 0u64;
        // Marking what changed keeps the wire form of the series that did
        // not (the destinations copy those instead of encoding them).
        batch.retain_marking(|s| {
            let mut changed = false;
            if !self.rules.is_empty() {
                match destination::relabel_like_vmagent_marking(&self.rules, &mut s.labels) {
                    Some(c) => changed = c,
                    None => {
                        dropped += s.samples.len() as u64;
                        return None;
                    }
                }
            }
            for (k, v) in external {
                if s.labels.get(k).is_none() {
                    s.labels.set(k.as_str(), v.as_str());
                    changed = true;
                }
            }
            Some(changed)
        });
        (batch, dropped)
    }
}
