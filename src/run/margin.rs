//! The wake margin of a group: how long after a timestamp is due the group
//! evaluates it.
//!
//! VictoriaMetrics answers a query for a time closer to its `now` than
//! `-search.latencyOffset` (at least 1s in older releases, 1.79 among them) as of
//! `now - latencyOffset`, while still stamping the time asked for. A group
//! whose timestamps fall due closer than that to the present (`eval_delay`
//! below the offset) must wait out the difference, or every evaluation reads
//! older data. How far behind the source answers is measured, not assumed:
//! `time()` asked for at the present comes back as the time the source
//! really used, and the difference is its lag, skew between the two clocks
//! included. The margin is that lag minus the group's own delay, plus
//! [`ALLOWANCE_MS`] for the request's travel time varying, and never more
//! than the configured `EngineOptions::wake_margin` (1.2s), which is also
//! the margin until a measurement succeeds and for sources that cannot be
//! asked (VictoriaLogs). Against Prometheus, or VictoriaMetrics with
//! `eval_delay` at its latency offset (both 30s by default), the margin
//! falls to the allowance, and results arrive about a second sooner.
//!
//! Measured again every [`PROBE_EVERY_MS`], with the group's own `params`
//! and `headers`, so a per-group `latency_offset` or tenant is taken into
//! account.

use crate::run::datasource::{Datasource, RuleQuery};
use crate::run::rules::{Group, RuleType};
use crate::run::schedule::{Clock, Schedule};
use std::time::Duration;

/// Added to the measured lag: how much later than when it was measured a
/// request may reach the source.
pub const ALLOWANCE_MS: i64 = 150;

/// How often the lag is measured again.
pub const PROBE_EVERY_MS: i64 = 5 * 60 * 1000;

/// Longest wait for one measurement; a source slower than this keeps the
/// margin it had.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The margin for a source answering `lag_ms` behind, for a schedule whose
/// timestamps fall due `slack_ms` after themselves, at most `cap_ms`.
pub fn margin_for(lag_ms: i64, slack_ms: i64, cap_ms: i64) -> i64 {
    lag_ms
        .saturating_sub(slack_ms)
        .max(0)
        .saturating_add(ALLOWANCE_MS)
        .min(cap_ms)
}

/// A group's current margin and how it is measured.
pub(crate) struct WakeMargin {
    cap_ms: i64,
    current_ms: i64,
    /// How long after a timestamp it falls due (`eval_delay`, or 0 with an
    /// `eval_offset`).
    slack_ms: i64,
    /// `time()` with the group's params and headers; `None` when the
    /// group's source cannot be asked.
    probe: Option<RuleQuery>,
    checked_at_ms: Option<i64>,
}

impl WakeMargin {
    pub(crate) fn new(group: &Group, schedule: &Schedule, cap_ms: i64) -> WakeMargin {
        let probe = (group.rule_type == RuleType::Prometheus)
            .then(|| RuleQuery::new(group, "time()", schedule.interval_ms));
        WakeMargin {
            cap_ms,
            current_ms: cap_ms,
            slack_ms: schedule.due_at(0),
            probe,
            checked_at_ms: None,
        }
    }

    pub(crate) fn ms(&self) -> i64 {
        self.current_ms
    }

    /// Whether a measurement is due at `now_ms`.
    pub(crate) fn stale(&self, now_ms: i64) -> bool {
        self.probe.is_some()
            && self
                .checked_at_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= PROBE_EVERY_MS)
    }

    /// Measures the source's lag and sets the margin from it; a failed
    /// measurement keeps the margin as it was.
    pub(crate) async fn refresh(&mut self, ds: &dyn Datasource, clock: &dyn Clock) {
        let Some(probe) = &self.probe else {
            return;
        };
        let now = clock.now_ms();
        self.checked_at_ms = Some(now);
        let lag = tokio::time::timeout(PROBE_TIMEOUT, ds.answer_lag(probe, now))
            .await
            .ok()
            .flatten();
        if let Some(lag) = lag {
            let margin = margin_for(lag, self.slack_ms, self.cap_ms);
            if margin != self.current_ms {
                tracing::debug!(
                    lag_ms = lag,
                    margin_ms = margin,
                    "datasource lag measured; wake margin set"
                );
            }
            self.current_ms = margin;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_covers_the_lag_beyond_the_delay() {
        // VictoriaMetrics 1.79 with latencyOffset 0 lags 1s; no eval_delay.
        assert_eq!(margin_for(1000, 0, 1200), 1150);
        // Prometheus: no lag.
        assert_eq!(margin_for(0, 0, 1200), ALLOWANCE_MS);
        // eval_delay 30s against latencyOffset 30s (both defaults).
        assert_eq!(margin_for(29_990, 30_000, 1200), ALLOWANCE_MS);
        // A lag beyond the delay by more than the cap: the cap.
        assert_eq!(margin_for(30_000, 0, 1200), 1200);
        // Never past the cap (3/4 of a short interval), never negative.
        assert_eq!(margin_for(0, 0, 100), 100);
        assert_eq!(margin_for(-5000, 0, 1200), ALLOWANCE_MS);
        assert_eq!(margin_for(i64::MAX, i64::MIN, 1200), 1200);
    }
}
