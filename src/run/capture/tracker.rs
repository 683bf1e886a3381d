//! Breach detection: which series of a rule's exports start or stop
//! breaching, per capture. Pure; the manager applies the events.
//!
//! A series *starts* breaching at its first non-stale sample after absence
//! and *stops* at the stale marker the engine exports when it disappears
//! (`run::eval`). Replay exports no stale markers, so a gap longer than the
//! group's interval between two samples also ends a breach (at the last
//! sample plus one interval, where the marker would have been), and
//! [`Tracker::finish`] ends whatever is still open at the end of a replay.
//! Each series is tracked per capture, identified by capture, group, rule
//! and labels; the same batch seen twice (the engine retries a timestamp
//! whose export failed) changes nothing.

use super::config::{CaptureConfig, CaptureDef};
use crate::model::{ExportBatch, ExportKind, Labels};
use std::collections::HashMap;
use std::sync::Arc;

/// Breaching series tracked per capture; more are refused and counted.
pub const MAX_BREACHING_PER_CAPTURE: usize = 10_000;

/// The key a breaching series opens: its capture and rendered selectors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaptureKey {
    pub capture: Arc<str>,
    pub selectors: Vec<String>,
}

impl CaptureKey {
    pub fn new(capture: &str, selectors: Vec<String>) -> CaptureKey {
        CaptureKey {
            capture: Arc::from(capture),
            selectors,
        }
    }

    /// Stable id: hex `xxh64` of the name and the selectors.
    pub fn id(&self) -> String {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        h.update(self.capture.as_bytes());
        for s in &self.selectors {
            h.update(b"\0");
            h.update(s.as_bytes());
        }
        format!("{:016x}", h.digest())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Start {
        key: Arc<CaptureKey>,
        identity: u64,
        at_ms: i64,
        /// The breaching series, as shown.
        series: String,
    },
    End {
        key: Arc<CaptureKey>,
        identity: u64,
        at_ms: i64,
    },
    /// Breaching samples of an open series (its latest time).
    Seen { key: Arc<CaptureKey>, at_ms: i64 },
    /// A breach that cannot open its capture.
    Refused {
        capture: Arc<str>,
        reason: &'static str,
        message: String,
    },
}

struct Tracked {
    capture: Arc<str>,
    /// `None`: its selectors could not be rendered (reported once).
    key: Option<Arc<CaptureKey>>,
    last_ms: i64,
    interval_ms: i64,
}

/// Series breaching now, per capture.
#[derive(Default)]
pub struct Tracker {
    open: HashMap<u64, Tracked>,
    per_capture: HashMap<Arc<str>, usize>,
}

fn identity(capture: &str, group: &str, rule: &str, labels: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for part in [capture, group, rule] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    for l in labels {
        h.update(l.name.as_bytes());
        h.update(b"=");
        h.update(l.value.as_bytes());
        h.update(b"\0");
    }
    h.digest()
}

impl Tracker {
    /// Turns one rule batch (after global relabeling) into events.
    pub fn observe(&mut self, batch: &ExportBatch, config: &CaptureConfig, out: &mut Vec<Event>) {
        if !matches!(batch.origin.kind, ExportKind::Recording | ExportKind::Alert) {
            return;
        }
        let (group, rule) = (&*batch.origin.group, &*batch.origin.rule);
        let interval_ms = config.interval_ms(group);
        for def in &config.defs {
            if !def.takes_rule(group, rule) {
                continue;
            }
            for s in &batch.series {
                if def
                    .condition
                    .as_ref()
                    .is_some_and(|c| !c.matches(&s.labels))
                {
                    continue;
                }
                let id = identity(&def.name, group, rule, &s.labels);
                for p in &s.samples {
                    self.sample(def, id, &s.labels, p, interval_ms, out);
                }
            }
        }
    }

    fn sample(
        &mut self,
        def: &CaptureDef,
        id: u64,
        labels: &Labels,
        p: &crate::model::Sample,
        interval_ms: i64,
        out: &mut Vec<Event>,
    ) {
        let at = p.timestamp_ms;
        if p.is_stale() {
            if let Some(t) = self.open.get(&id) {
                if at > t.last_ms {
                    let t = self.remove(id).expect("present");
                    if let Some(key) = t.key {
                        out.push(Event::End {
                            key,
                            identity: id,
                            at_ms: at,
                        });
                    }
                }
            }
            return;
        }
        if let Some(t) = self.open.get_mut(&id) {
            if at <= t.last_ms {
                return;
            }
            if at - t.last_ms <= t.interval_ms {
                t.last_ms = at;
                if let Some(key) = &t.key {
                    out.push(Event::Seen {
                        key: Arc::clone(key),
                        at_ms: at,
                    });
                }
                return;
            }
            // A gap: the breach ended one interval after its last sample.
            let ended = t.last_ms + t.interval_ms;
            let key = t.key.clone();
            t.last_ms = at;
            t.interval_ms = interval_ms;
            if let Some(key) = key {
                out.push(Event::End {
                    key: Arc::clone(&key),
                    identity: id,
                    at_ms: ended,
                });
                out.push(Event::Start {
                    key,
                    identity: id,
                    at_ms: at,
                    series: labels.to_string(),
                });
            }
            return;
        }
        let count = self.per_capture.get(&def.name).copied().unwrap_or(0);
        if count >= MAX_BREACHING_PER_CAPTURE {
            out.push(Event::Refused {
                capture: Arc::clone(&def.name),
                reason: "max_breaching",
                message: format!(
                    "more than {MAX_BREACHING_PER_CAPTURE} series breach at once; {labels} opens no capture"
                ),
            });
            return;
        }
        let value = if p.value.is_finite() { p.value } else { 0.0 };
        let key = match def.render(labels, value) {
            Ok(selectors) => Some(Arc::new(CaptureKey::new(&def.name, selectors))),
            Err(e) => {
                out.push(Event::Refused {
                    capture: Arc::clone(&def.name),
                    reason: "bad_selector",
                    message: format!("match: {e} (breaching series {labels})"),
                });
                None
            }
        };
        if let Some(key) = &key {
            out.push(Event::Start {
                key: Arc::clone(key),
                identity: id,
                at_ms: at,
                series: labels.to_string(),
            });
        }
        self.open.insert(
            id,
            Tracked {
                capture: Arc::clone(&def.name),
                key,
                last_ms: at,
                interval_ms,
            },
        );
        *self.per_capture.entry(Arc::clone(&def.name)).or_default() += 1;
    }

    fn remove(&mut self, id: u64) -> Option<Tracked> {
        let t = self.open.remove(&id)?;
        if let Some(n) = self.per_capture.get_mut(&t.capture) {
            *n = n.saturating_sub(1);
        }
        Some(t)
    }

    /// Ends series not seen for longer than `silence_ms` of data time
    /// before `horizon_ms`: a missed stale marker (an evaluation that
    /// never came, a rule removed by a reload) must not hold a capture
    /// open until `max_duration`.
    pub fn sweep(&mut self, horizon_ms: i64, silence_intervals: i64, out: &mut Vec<Event>) {
        let gone: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, t)| t.last_ms + silence_intervals * t.interval_ms < horizon_ms)
            .map(|(id, _)| *id)
            .collect();
        self.end_all(gone, out);
    }

    /// Ends every open series (the end of a replay).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let all: Vec<u64> = self.open.keys().copied().collect();
        self.end_all(all, out);
    }

    fn end_all(&mut self, ids: Vec<u64>, out: &mut Vec<Event>) {
        for id in ids {
            let Some(t) = self.remove(id) else { continue };
            if let Some(key) = t.key {
                out.push(Event::End {
                    key,
                    identity: id,
                    at_ms: t.last_ms + t.interval_ms,
                });
            }
        }
    }

    /// Forgets series of captures no longer configured (a reload).
    pub fn retain(&mut self, config: &CaptureConfig) {
        self.open.retain(|_, t| config.def(&t.capture).is_some());
        self.per_capture
            .retain(|name, _| config.def(name).is_some());
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::selector::{parse_label_set, Selector};
    use crate::model::{Origin, Sample, Series};

    fn config() -> CaptureConfig {
        let mut d = CaptureDef::manual(
            "cpu",
            vec![r#"{instance="{{ $labels.instance }}"}"#.into()],
            vec!["d".into()],
        );
        d.condition = Some(Selector::parse(r#"{severity="critical"}"#).unwrap());
        d.rules = vec!["g/*".into()];
        CaptureConfig {
            defs: vec![d],
            default_interval_ms: 10_000,
            ..CaptureConfig::default()
        }
    }

    fn batch(rule: &str, points: &[(&str, i64, bool)]) -> ExportBatch {
        let series = points
            .iter()
            .map(|(l, t, stale)| {
                let s = if *stale {
                    Sample::stale(*t)
                } else {
                    Sample::new(*t, 1.0)
                };
                Series::new(parse_label_set(l).unwrap(), vec![s])
            })
            .collect();
        ExportBatch::new(Origin::rule(ExportKind::Recording, "g", rule), series)
    }

    fn events(t: &mut Tracker, b: &ExportBatch) -> Vec<String> {
        let mut out = Vec::new();
        t.observe(b, &config(), &mut out);
        out.iter()
            .filter_map(|e| match e {
                Event::Start { key, at_ms, .. } => {
                    Some(format!("start {} @{at_ms}", key.selectors.join(",")))
                }
                Event::End { key, at_ms, .. } => {
                    Some(format!("end {} @{at_ms}", key.selectors.join(",")))
                }
                Event::Refused { message, .. } => Some(format!("refused {message}")),
                Event::Seen { .. } => None,
            })
            .collect()
    }

    const A: &str = r#"r{instance="a", severity="critical"}"#;

    #[test]
    fn start_at_first_sample_end_at_stale_marker() {
        let mut t = Tracker::default();
        assert_eq!(
            events(&mut t, &batch("r", &[(A, 10_000, false)])),
            [r#"start {instance="a"} @10000"#]
        );
        assert!(events(&mut t, &batch("r", &[(A, 20_000, false)])).is_empty());
        // The same batch again (a retried export) changes nothing.
        assert!(events(&mut t, &batch("r", &[(A, 20_000, false)])).is_empty());
        assert_eq!(
            events(&mut t, &batch("r", &[(A, 30_000, true)])),
            [r#"end {instance="a"} @30000"#]
        );
        assert!(events(&mut t, &batch("r", &[(A, 30_000, true)])).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn condition_and_rules_filter() {
        let mut t = Tracker::default();
        let warning = r#"r{instance="a", severity="warning"}"#;
        assert!(events(&mut t, &batch("r", &[(warning, 10_000, false)])).is_empty());
        let mut other = batch("r", &[(A, 10_000, false)]);
        other.origin = Origin::rule(ExportKind::Recording, "h", "r");
        assert!(events(&mut t, &other).is_empty());
        other.origin = Origin::received();
        assert!(events(&mut t, &other).is_empty());
    }

    #[test]
    fn a_gap_ends_and_restarts_and_finish_ends_all() {
        let mut t = Tracker::default();
        let b = ExportBatch::new(
            Origin::rule(ExportKind::Recording, "g", "r"),
            vec![Series::new(
                parse_label_set(A).unwrap(),
                [10_000, 20_000, 50_000, 60_000]
                    .iter()
                    .map(|&t| Sample::new(t, 1.0))
                    .collect(),
            )],
        );
        assert_eq!(
            events(&mut t, &b),
            [
                r#"start {instance="a"} @10000"#,
                r#"end {instance="a"} @30000"#,
                r#"start {instance="a"} @50000"#
            ]
        );
        let mut out = Vec::new();
        t.finish(&mut out);
        assert!(
            matches!(&out[..], [Event::End { at_ms: 70_000, .. }]),
            "{out:?}"
        );
    }

    #[test]
    fn unrenderable_breach_is_refused_once() {
        let mut t = Tracker::default();
        let no_instance = r#"r{severity="critical"}"#;
        let e = events(&mut t, &batch("r", &[(no_instance, 10_000, false)]));
        assert!(
            e[0].starts_with("refused match:") && e[0].contains("matches every series"),
            "{e:?}"
        );
        assert!(events(&mut t, &batch("r", &[(no_instance, 20_000, false)])).is_empty());
    }

    #[test]
    fn sweep_ends_silent_series() {
        let mut t = Tracker::default();
        events(&mut t, &batch("r", &[(A, 10_000, false)]));
        let mut out = Vec::new();
        t.sweep(30_000, 3, &mut out);
        assert!(out.is_empty());
        t.sweep(50_000, 3, &mut out);
        assert!(
            matches!(&out[..], [Event::End { at_ms: 20_000, .. }]),
            "{out:?}"
        );
    }
}
