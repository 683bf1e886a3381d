//! When a group evaluates, and at which timestamp: vmalert's
//! `adjustReqTimestamp`, plus the clock the engine reads time from.
//!
//! vmalert computes the query timestamp from the moment a tick fires:
//!
//! * `eval_offset` set: `ts = truncate(now - offset, interval) + offset`,
//!   the last instant at the offset within an interval (`eval_delay` and
//!   `eval_alignment` are ignored, as in vmalert);
//! * otherwise `ts = now - eval_delay`, then `truncate(ts, interval)` unless
//!   `eval_alignment: false`.
//!
//! `truncate` is Go's `Time.Truncate`, which rounds down to a multiple of the
//! interval *since Go's zero time* (year 1), not since the Unix epoch. For
//! intervals that divide 62,135,596,800 s (1s, 2s, 5s, 10s, 15s, 30s, 1m,
//! 5m, 1h, 1d, ...) the two agree; for others they do not: a 7s group
//! evaluates at Unix seconds ≡ 3 (mod 7). [`go_truncate`] reproduces it.
//!
//! vmalert wakes at a random phase inside the interval; spillway wakes at the
//! first instant a timestamp is due ([`Schedule::due_at`]: `ts + eval_delay`,
//! or `ts` with an offset), which gives the same timestamps sooner. Without
//! alignment the grid goes through the first evaluation, as vmalert's ticker
//! does.
//!
//! Time is an input ([`Clock`]): production reads the system clock, tests
//! drive [`TokioClock`] with tokio's paused time.

use crate::run::rules::Group;
use std::time::Duration;

/// Milliseconds from Go's zero time (0001-01-01T00:00:00Z) to the Unix epoch.
const GO_ZERO_TIME_OFFSET_MS: i64 = 62_135_596_800_000;

/// Go's `time.Time.Truncate(interval)` on Unix milliseconds.
pub fn go_truncate(ts_ms: i64, interval_ms: i64) -> i64 {
    if interval_ms <= 0 {
        return ts_ms;
    }
    ts_ms - (ts_ms + GO_ZERO_TIME_OFFSET_MS).rem_euclid(interval_ms)
}

/// Wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::model::time::now_ms()
    }
}

/// Wall time derived from tokio's clock: `base_ms` plus the tokio time
/// elapsed since creation. Under `#[tokio::test(start_paused = true)]` it
/// moves only when the test advances time, and tokio timers agree with it.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base_ms: i64,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base_ms: i64) -> Self {
        TokioClock {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.base_ms + self.base.elapsed().as_millis() as i64
    }
}

/// Sleeps until `clock` reads at least `target_ms`.
pub async fn sleep_until(clock: &dyn Clock, target_ms: i64) {
    loop {
        let now = clock.now_ms();
        if now >= target_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis((target_ms - now) as u64)).await;
    }
}

/// How a group maps wall time to evaluation timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `truncate(now - delay)`: the default.
    Aligned { delay_ms: i64 },
    /// `truncate(now - offset) + offset`.
    Offset { offset_ms: i64 },
    /// `now - delay` on a grid through the first evaluation.
    Unaligned { delay_ms: i64, phase_ms: i64 },
}

/// The evaluation timestamps of one group: a grid of `interval` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub interval_ms: i64,
    pub mode: Mode,
}

impl Schedule {
    /// The schedule of `group`; `default_interval` and `default_delay` stand
    /// for vmalert's `-evaluationInterval` and `-rule.evalDelay`, `now_ms`
    /// anchors the grid of unaligned groups.
    pub fn for_group(
        group: &Group,
        default_interval: Duration,
        default_delay: Duration,
        now_ms: i64,
    ) -> Schedule {
        let interval_ms = (group.interval.unwrap_or(default_interval).as_millis() as i64).max(1);
        let delay_ms = group.eval_delay.unwrap_or(default_delay).as_millis() as i64;
        let mode = match (group.eval_offset, group.eval_alignment) {
            (Some(offset), _) => Mode::Offset {
                offset_ms: offset.as_millis() as i64 % interval_ms,
            },
            (None, Some(false)) => Mode::Unaligned {
                delay_ms,
                phase_ms: (now_ms - delay_ms).rem_euclid(interval_ms),
            },
            (None, _) => Mode::Aligned { delay_ms },
        };
        Schedule { interval_ms, mode }
    }

    /// The timestamp vmalert queries at when its tick fires at `now_ms`:
    /// the latest grid point that is due.
    pub fn timestamp_at(&self, now_ms: i64) -> i64 {
        let i = self.interval_ms;
        match self.mode {
            Mode::Aligned { delay_ms } => go_truncate(now_ms - delay_ms, i),
            Mode::Offset { offset_ms } => go_truncate(now_ms - offset_ms, i) + offset_ms,
            Mode::Unaligned { delay_ms, phase_ms } => {
                let t = now_ms - delay_ms;
                t - (t - phase_ms).rem_euclid(i)
            }
        }
    }

    /// The wall time from which `ts` is due (inverse of [`Self::timestamp_at`]).
    pub fn due_at(&self, ts_ms: i64) -> i64 {
        match self.mode {
            Mode::Aligned { delay_ms } | Mode::Unaligned { delay_ms, .. } => ts_ms + delay_ms,
            Mode::Offset { .. } => ts_ms,
        }
    }

    /// The first grid point at or after `t` (replay starts there).
    pub fn first_at_or_after(&self, t_ms: i64) -> i64 {
        let below = self.grid_floor(t_ms);
        if below == t_ms {
            t_ms
        } else {
            below + self.interval_ms
        }
    }

    /// The last grid point at or before `t`.
    pub fn grid_floor(&self, t_ms: i64) -> i64 {
        let i = self.interval_ms;
        match self.mode {
            Mode::Aligned { .. } => go_truncate(t_ms, i),
            Mode::Offset { offset_ms } => go_truncate(t_ms - offset_ms, i) + offset_ms,
            Mode::Unaligned { phase_ms, .. } => t_ms - (t_ms - phase_ms).rem_euclid(i),
        }
    }
}

/// Which timestamps a rule evaluates now. `cursor` is the oldest timestamp
/// the rule has not evaluated yet (`None` before its first evaluation),
/// `due` the newest due one. Timestamps older than `max_catch_up` before
/// `due` are given up; their number comes back as the second value.
pub fn catch_up_plan(
    cursor: Option<i64>,
    due_ms: i64,
    step_ms: i64,
    max_catch_up: Duration,
) -> (Vec<i64>, u64) {
    let step_ms = step_ms.max(1);
    let from = match cursor {
        None => return (vec![due_ms], 0),
        Some(c) if c > due_ms => return (Vec::new(), 0),
        Some(c) => c,
    };
    // The oldest timestamp still worth evaluating, on the rule's grid.
    let span = (max_catch_up.as_millis() as i64 / step_ms) * step_ms;
    let earliest = due_ms - span;
    let (start, dropped) = if from < earliest {
        let n = (earliest - from + step_ms - 1) / step_ms;
        (from + n * step_ms, n as u64)
    } else {
        (from, 0)
    };
    let mut out = Vec::new();
    let mut ts = start;
    while ts <= due_ms {
        out.push(ts);
        ts += step_ms;
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::parse_timestamp_ms;

    fn t(s: &str) -> i64 {
        parse_timestamp_ms(s).unwrap()
    }

    fn group(yaml_group: &str) -> Group {
        let text =
            format!("groups:\n- name: g\n{yaml_group}  rules:\n  - record: r\n    expr: up\n");
        crate::run::rules::load_str("g.yml", &text, &Default::default())
            .unwrap()
            .remove(0)
    }

    fn schedule(yaml_group: &str) -> Schedule {
        Schedule::for_group(
            &group(yaml_group),
            Duration::from_secs(60),
            Duration::from_secs(30),
            t("2024-01-02T10:00:07Z"),
        )
    }

    #[test]
    fn go_truncate_counts_from_year_one() {
        // 1m, 5s and 1h divide the offset between the epochs: plain alignment.
        assert_eq!(
            go_truncate(t("2024-01-02T10:00:07Z"), 60_000),
            t("2024-01-02T10:00:00Z")
        );
        assert_eq!(
            go_truncate(t("2024-01-02T10:59:59Z"), 3_600_000),
            t("2024-01-02T10:00:00Z")
        );
        // 7s does not: Go lands on Unix seconds ≡ 3 (mod 7).
        let ts = go_truncate(1_700_000_000_000, 7_000);
        assert_eq!((ts / 1000) % 7, 3);
        assert!(ts <= 1_700_000_000_000 && ts > 1_700_000_000_000 - 7_000);
    }

    // Worked examples of vmalert's adjustReqTimestamp.
    #[test]
    fn default_is_aligned_after_the_delay() {
        // interval 1m, -rule.evalDelay 30s: at 10:00:07 the query time is
        // truncate(09:59:37, 1m) = 09:59:00.
        let s = schedule("");
        assert_eq!(
            s.timestamp_at(t("2024-01-02T10:00:07Z")),
            t("2024-01-02T09:59:00Z")
        );
        // 10:00:00 becomes due at 10:00:30.
        assert_eq!(
            s.due_at(t("2024-01-02T10:00:00Z")),
            t("2024-01-02T10:00:30Z")
        );
        assert_eq!(
            s.timestamp_at(t("2024-01-02T10:00:30Z")),
            t("2024-01-02T10:00:00Z")
        );
        assert_eq!(
            s.timestamp_at(t("2024-01-02T10:00:29.999Z")),
            t("2024-01-02T09:59:00Z")
        );
    }

    #[test]
    fn explicit_delay_and_interval() {
        let s = schedule("  interval: 5m\n  eval_delay: 0s\n");
        assert_eq!(
            s.timestamp_at(t("2024-01-02T10:07:00Z")),
            t("2024-01-02T10:05:00Z")
        );
        assert_eq!(
            s.due_at(t("2024-01-02T10:10:00Z")),
            t("2024-01-02T10:10:00Z")
        );
    }

    #[test]
    fn offset_ignores_delay_and_alignment() {
        // vmalert's own example: interval 1h, eval_offset 30m, evaluated at
        // 11:20 -> 10:30; at 11:40 -> 11:30.
        let s = schedule(
            "  interval: 1h\n  eval_offset: 30m\n  eval_delay: 5m\n  eval_alignment: false\n",
        );
        assert_eq!(
            s.timestamp_at(t("2024-01-02T11:20:00Z")),
            t("2024-01-02T10:30:00Z")
        );
        assert_eq!(
            s.timestamp_at(t("2024-01-02T11:40:00Z")),
            t("2024-01-02T11:30:00Z")
        );
        assert_eq!(
            s.due_at(t("2024-01-02T11:30:00Z")),
            t("2024-01-02T11:30:00Z")
        );
        assert_eq!(
            s.first_at_or_after(t("2024-01-02T11:31:00Z")),
            t("2024-01-02T12:30:00Z")
        );
    }

    #[test]
    fn unaligned_keeps_the_phase_of_the_first_evaluation() {
        let s = schedule("  eval_alignment: false\n");
        // First evaluation at 10:00:07 with 30s delay queries 09:59:37.
        assert_eq!(
            s.timestamp_at(t("2024-01-02T10:00:07Z")),
            t("2024-01-02T09:59:37Z")
        );
        assert_eq!(
            s.timestamp_at(t("2024-01-02T10:01:10Z")),
            t("2024-01-02T10:00:37Z")
        );
        assert_eq!(
            s.due_at(t("2024-01-02T10:00:37Z")),
            t("2024-01-02T10:01:07Z")
        );
    }

    #[test]
    fn catch_up_after_an_outage() {
        let step = 60_000;
        let h = Duration::from_secs(3600);
        let due = t("2024-01-02T10:05:00Z");
        // First evaluation: only the due timestamp.
        assert_eq!(catch_up_plan(None, due, step, h), (vec![due], 0));
        // Up to date.
        assert_eq!(catch_up_plan(Some(due), due, step, h), (vec![due], 0));
        assert_eq!(catch_up_plan(Some(due + step), due, step, h), (vec![], 0));
        // Last success at 10:01 (cursor 10:02): 10:02..10:05, oldest first.
        let (ts, dropped) = catch_up_plan(Some(t("2024-01-02T10:02:00Z")), due, step, h);
        assert_eq!(
            ts,
            [
                t("2024-01-02T10:02:00Z"),
                t("2024-01-02T10:03:00Z"),
                t("2024-01-02T10:04:00Z"),
                due
            ]
        );
        assert_eq!(dropped, 0);
        // A 3h outage with max_catch_up 1h: 09:05..10:05 (61 timestamps),
        // the 120 before are given up.
        let (ts, dropped) = catch_up_plan(Some(t("2024-01-02T07:05:00Z")), due, step, h);
        assert_eq!(ts.first(), Some(&t("2024-01-02T09:05:00Z")));
        assert_eq!(ts.len(), 61);
        assert_eq!(dropped, 120);
        // max_catch_up 0 disables catching up.
        let (ts, dropped) =
            catch_up_plan(Some(t("2024-01-02T10:00:00Z")), due, step, Duration::ZERO);
        assert_eq!((ts, dropped), (vec![due], 5));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::starting_at(1_000);
        assert_eq!(c.now_ms(), 1_000);
        sleep_until(&c, 61_000).await;
        assert_eq!(c.now_ms(), 61_000);
    }
}
