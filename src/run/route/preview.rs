//! Routing without sending, for `spillway rules preview`: what each
//! destination would receive of rule results, with the same relabeling,
//! external labels and schedules as the pipeline, and no queue opened.

use super::fanout::GlobalStage;
use super::PipelineConfig;
use crate::model::{ExportBatch, Series};
use crate::sink::destination;

/// What each destination would receive of rule results, without opening
/// a queue or sending anything (`spillway rules preview`): global
/// relabeling (the run's external labels are the engine's job), then each
/// destination's relabeling and external labels, as [`Pipeline`] and the
/// destinations apply them. Returns, per destination in config order, its
/// name and its series.
pub fn dry_route(config: &PipelineConfig, batch: Vec<Series>) -> Vec<(String, Vec<Series>)> {
    let global = GlobalStage {
        rules: config.global_relabel.clone(),
        external_labels: Vec::new(),
    };
    let (batch, _) = global.apply(ExportBatch::received(batch), false);
    let batch = batch.series;
    config
        .destinations
        .iter()
        .map(|d| {
            let kept = batch
                .iter()
                .filter_map(|s| {
                    let mut labels = s.labels.clone();
                    if !d.relabel.is_empty()
                        && !destination::relabel_like_vmagent(&d.relabel, &mut labels)
                    {
                        return None;
                    }
                    for (k, v) in &d.external_labels {
                        if labels.get(k).is_none() {
                            labels.set(k.as_str(), v.as_str());
                        }
                    }
                    Some(Series::new(labels, s.samples.clone()))
                })
                .collect();
            (d.name.clone(), kept)
        })
        .collect()
}

/// What each event destination would receive of `batches` (rule results
/// with their origin and annotations), as the items it would send: the
/// RFC 5424 message, the bulk action and document, the HEC object, the
/// webhook body part or the file line. Global relabeling, the
/// destination's relabeling and its schedule apply as in [`Pipeline`].
/// Empty for metric destinations. For `spillway rules preview`.
pub fn dry_route_events(config: &PipelineConfig, batches: &[ExportBatch]) -> Vec<Vec<String>> {
    use crate::sink::event::{encode::write_item, shape::EventRef};
    let global = GlobalStage {
        rules: config.global_relabel.clone(),
        external_labels: Vec::new(),
    };
    let batches: Vec<ExportBatch> = batches
        .iter()
        .map(|b| global.apply(b.clone(), false).0)
        .collect();
    config
        .destinations
        .iter()
        .map(|d| {
            let Some(ev) = &d.event else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for b in &batches {
                for (i, s) in b.series.iter().enumerate() {
                    let mut labels = s.labels.clone();
                    if !d.relabel.is_empty()
                        && !destination::relabel_like_vmagent(&d.relabel, &mut labels)
                    {
                        continue;
                    }
                    for (k, v) in &d.external_labels {
                        if labels.get(k).is_none() {
                            labels.set(k.as_str(), v.as_str());
                        }
                    }
                    for &sample in &s.samples {
                        if d.schedule
                            .as_ref()
                            .is_some_and(|r| !r.schedule.contains(sample.timestamp_ms))
                        {
                            continue;
                        }
                        let e = EventRef {
                            sample,
                            labels: &labels,
                            origin: &b.origin,
                            annotations: b.annotations_of(i),
                        };
                        let mut item = Vec::new();
                        if write_item(ev, &e, &mut item) {
                            out.push(String::from_utf8_lossy(&item).trim_end().to_string());
                        }
                    }
                }
            }
            out
        })
        .collect()
}
