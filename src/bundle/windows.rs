//! How a gather cuts its range into `/api/v1/export` calls.
//!
//! Each call costs the server a fixed part (index search, and decompressing
//! every block that overlaps the window, whatever its share of the block) on
//! top of the samples it sends, so many short windows multiply the server's
//! work: 73 five-minute windows over 6 h cost it ~10× one export. Without
//! `--batch-window` the first window is sized from the number of matching
//! series (`/api/v1/series`, an index lookup that reads no samples) at one
//! point per [`ASSUMED_INTERVAL_MS`]; when that count is unavailable it is a
//! short probe. Every following window is sized from what the previous one
//! held (samples and bytes per millisecond of range) to carry about
//! [`Limits::target_samples`], never more than
//! [`Limits::max_bytes`] of staged text, so a small range goes in two calls
//! and a huge one in windows of bounded size (memory stays flat anyway: a
//! window is streamed to its staging file). Growth per window is capped, so
//! a sparse first window cannot make the next one unbounded.
//!
//! The plan depends on what the server returned, so it cannot be recomputed
//! on `--resume`: each journal entry records its window's bounds, and a
//! resumed run refetches damaged windows with those bounds and continues the
//! plan after the last one ([`WindowPlanner::resume_after`]).

use crate::model::range::MAX_WINDOWS;

/// The first window of an adaptive plan when the series are not counted:
/// short, so that measuring costs little even for a large fleet.
pub const PROBE_MS: i64 = 5 * 60_000;
/// Points per series assumed before a window is measured: one per 10 s, on
/// the dense side of common scrape intervals, so the first window errs short.
pub const ASSUMED_INTERVAL_MS: i64 = 10_000;
/// The shortest window (before the `MAX_WINDOWS` floor).
pub const MIN_WINDOW_MS: i64 = 30_000;
/// A window is at most this many times longer than the one before.
pub const MAX_GROWTH: i64 = 128;

/// What one adaptive window should carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Samples per call (the server answers ~this many in one export as
    /// cheaply per sample as in one whole-range export).
    pub target_samples: u64,
    /// Staged bytes per window (resume granularity and temp disk space).
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            target_samples: 40_000_000,
            max_bytes: 1 << 30,
        }
    }
}

/// The windows of one range, produced one at a time: fixed length, or sized
/// from what the previous window held.
#[derive(Clone, Debug)]
pub struct WindowPlanner {
    from: i64,
    to: i64,
    align: i64,
    /// The aligned edge the next window starts at (clamped to `from`).
    edge: i128,
    len: i64,
    min_len: i64,
    /// Longest adaptive window (`query_range` answers a bounded number of points).
    max_len: i64,
    adaptive: Option<Limits>,
}

impl WindowPlanner {
    /// Windows of `len_ms` (a multiple of `align_ms`), edges on multiples of
    /// `align_ms` from `from_ms`'s aligned start, as `Windows::aligned` cuts them.
    pub fn fixed(from_ms: i64, to_ms: i64, len_ms: i64, align_ms: i64) -> WindowPlanner {
        Self::new(from_ms, to_ms, len_ms, align_ms, None)
    }

    /// A first window of `first_ms` (see [`first_window_ms`]), then windows
    /// sized by [`WindowPlanner::advance`].
    pub fn adaptive(
        from_ms: i64,
        to_ms: i64,
        first_ms: i64,
        align_ms: i64,
        limits: Limits,
    ) -> WindowPlanner {
        Self::new(from_ms, to_ms, first_ms, align_ms, Some(limits))
    }

    fn new(from: i64, to: i64, len: i64, align: i64, adaptive: Option<Limits>) -> WindowPlanner {
        let align = align.max(1);
        let origin = i128::from(from).div_euclid(i128::from(align)) * i128::from(align);
        let min_len = adaptive_min_ms(from, to, align);
        WindowPlanner {
            from,
            to,
            align,
            edge: origin,
            len: round_up(len.max(1), align),
            min_len,
            max_len: i64::MAX / 4,
            adaptive,
        }
    }

    /// Caps adaptive windows at `max_ms` (whole steps, at least the floor).
    pub fn cap_len(&mut self, max_ms: i64) {
        self.max_len = (max_ms / self.align * self.align).max(self.min_len);
    }

    fn len(&self) -> i64 {
        match self.adaptive {
            Some(_) => self.len.min(self.max_len),
            None => self.len,
        }
    }

    /// The next window, `[start, end]` inclusive, or `None` past the range.
    pub fn peek(&self) -> Option<(i64, i64)> {
        let start = self.edge.max(i128::from(self.from));
        if start > i128::from(self.to) {
            return None;
        }
        let len = i128::from(self.len());
        let mut end = (self.edge + len - 1).min(i128::from(self.to));
        if self.adaptive.is_some() && len < i128::from(self.max_len) {
            // A short tail would cost a whole call: take it into this window.
            let rest = i128::from(self.to) - end;
            if rest > 0 && rest * 2 <= len {
                end = i128::from(self.to);
            }
        }
        // Both lie within [from, to].
        Some((start as i64, end as i64))
    }

    /// Moves past the window `peek` gave, which held `samples` in `bytes`.
    pub fn advance(&mut self, samples: u64, bytes: u64) {
        if let Some((start, end)) = self.peek() {
            self.resume_after(start, end, samples, bytes);
        }
    }

    /// Continues the plan after the window `[start, end]` (fetched by this
    /// run or an earlier one), which held `samples` in `bytes`.
    pub fn resume_after(&mut self, start: i64, end: i64, samples: u64, bytes: u64) {
        let span = i128::from(end) - i128::from(start) + 1;
        self.edge = i128::from(end) + 1;
        if let Some(limits) = self.adaptive {
            self.len = next_len(span, samples, bytes, limits, self.min_len, self.align);
        }
    }

    /// An estimate of the windows still to come (for progress only).
    pub fn remaining_estimate(&self) -> u64 {
        let start = self.edge.max(i128::from(self.from));
        let rest = i128::from(self.to) - start + 1;
        if rest <= 0 {
            return 0;
        }
        let len = i128::from(self.len());
        let n = (rest + len - 1) / len;
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    pub fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }
}

/// The first window of an adaptive plan over `[from_ms, to_ms]`: for
/// `series` matching series (`None`: not counted) at one point per
/// [`ASSUMED_INTERVAL_MS`], the length that carries `limits.target_samples`
/// (the whole range when it fits), at least the probe and at most
/// [`MAX_GROWTH`] probes long; the probe when the count is unknown.
pub fn first_window_ms(
    from_ms: i64,
    to_ms: i64,
    align_ms: i64,
    series: Option<u64>,
    limits: Limits,
) -> i64 {
    let align = align_ms.max(1);
    let probe = round_up(PROBE_MS, align).max(adaptive_min_ms(from_ms, to_ms, align));
    let Some(series) = series else {
        return probe;
    };
    let longest = i128::from(probe) * i128::from(MAX_GROWTH);
    let fits = i128::from(limits.target_samples) * i128::from(ASSUMED_INTERVAL_MS)
        / i128::from(series.max(1));
    let range = i128::from(to_ms) - i128::from(from_ms) + 1;
    let len = if fits >= range {
        // The whole range, whatever its alignment.
        range + i128::from(align)
    } else {
        fits
    };
    let len = i64::try_from(len.min(longest)).unwrap_or(i64::MAX / 4);
    round_up(len, align).max(probe)
}

/// The shortest adaptive window: 30 s, and long enough that the range never
/// needs more than `MAX_WINDOWS` of them.
fn adaptive_min_ms(from: i64, to: i64, align: i64) -> i64 {
    let range = (i128::from(to) - i128::from(from) + 1).max(1);
    let floor = (range + i128::from(MAX_WINDOWS) - 1) / i128::from(MAX_WINDOWS);
    let floor = i64::try_from(floor).unwrap_or(i64::MAX / 4);
    round_up(MIN_WINDOW_MS.max(floor), align)
}

/// The length that carries about `limits` at the density of a window of
/// `span` ms that held `samples` in `bytes`.
fn next_len(span: i128, samples: u64, bytes: u64, limits: Limits, min: i64, align: i64) -> i64 {
    let grown = span * i128::from(MAX_GROWTH);
    let by = |target: u64, seen: u64| {
        if seen == 0 {
            grown
        } else {
            span * i128::from(target) / i128::from(seen)
        }
    };
    let len = grown
        .min(by(limits.target_samples, samples))
        .min(by(limits.max_bytes, bytes));
    let len = i64::try_from(len).unwrap_or(i64::MAX / 4);
    // Rounded down to whole steps, so the window never exceeds the caps.
    (len / align * align).max(min)
}

fn round_up(v: i64, align: i64) -> i64 {
    let v = i128::from(v);
    let a = i128::from(align.max(1));
    i64::try_from((v + a - 1) / a * a).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::range::Windows;

    const H: i64 = 3_600_000;
    const M: i64 = 60_000;

    /// Runs a plan against a server holding `density` samples per ms.
    fn run(mut p: WindowPlanner, density: f64, bytes_per_sample: u64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while let Some((s, e)) = p.peek() {
            let samples = ((e - s + 1) as f64 * density) as u64;
            out.push((s, e));
            p.advance(samples, samples * bytes_per_sample);
            assert!(out.len() <= 200_000, "the plan does not end");
        }
        out
    }

    fn contiguous(from: i64, to: i64, ws: &[(i64, i64)]) {
        assert_eq!(ws.first().unwrap().0, from);
        assert_eq!(ws.last().unwrap().1, to);
        for pair in ws.windows(2) {
            assert_eq!(pair[0].1 + 1, pair[1].0, "{ws:?}");
        }
    }

    #[test]
    fn fixed_plan_is_the_aligned_windows() {
        let (from, to) = (1_000_123, 1_000_123 + 6 * H);
        for align in [1, 15_000] {
            let got = run(WindowPlanner::fixed(from, to, 5 * M, align), 1.0, 20);
            let want: Vec<_> = Windows::aligned(from, to, 5 * M, align).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn small_range_is_one_window() {
        let (from, to) = (0, 4 * M);
        let p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, 1, None, Limits::default()),
            1,
            Limits::default(),
        );
        assert_eq!(run(p, 1e6, 20), [(0, 4 * M)]);
    }

    /// The bench's shape: 20,000 series at 15 s over 6 h (28.8 M samples)
    /// goes in the probe and one more call.
    #[test]
    fn moderate_fleet_takes_two_calls() {
        let (from, to) = (0, 6 * H);
        let density = 20_000.0 / 15_000.0;
        let p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, 1, None, Limits::default()),
            1,
            Limits::default(),
        );
        let ws = run(p, density, 22);
        contiguous(from, to, &ws);
        assert_eq!(ws, [(0, 5 * M - 1), (5 * M, 6 * H)]);
    }

    #[test]
    fn huge_fleet_gets_windows_of_the_target_size() {
        let (from, to) = (0, 24 * H);
        // 2 M series at 15 s: 40 M samples every 5 minutes.
        let density = 2_000_000.0 / 15_000.0;
        let limits = Limits::default();
        let p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, 1, None, Limits::default()),
            1,
            limits,
        );
        let ws = run(p, density, 10);
        contiguous(from, to, &ws);
        assert_eq!(ws.len(), 24 * 12, "{:?}", &ws[..3]);
        for &(s, e) in &ws[..ws.len() - 1] {
            let samples = ((e - s + 1) as f64 * density) as u64;
            assert!(samples <= limits.target_samples, "{s}..{e}: {samples}");
            assert!(samples > limits.target_samples / 2, "{s}..{e}: {samples}");
        }
    }

    #[test]
    fn byte_cap_bounds_windows_of_long_lines() {
        let (from, to) = (0, 24 * H);
        let limits = Limits {
            target_samples: 40_000_000,
            max_bytes: 100 << 20,
        };
        let density = 100.0 / 1000.0;
        let p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, 1, None, Limits::default()),
            1,
            limits,
        );
        let ws = run(p, density, 1000);
        contiguous(from, to, &ws);
        for &(s, e) in &ws {
            let bytes = ((e - s + 1) as f64 * density) as u64 * 1000;
            // The tail rule may add up to half a window.
            assert!(bytes <= limits.max_bytes * 3 / 2, "{s}..{e}: {bytes}");
        }
        assert!(ws.len() > 10, "{}", ws.len());
    }

    #[test]
    fn an_empty_first_window_grows_by_the_growth_cap() {
        let (from, to) = (0, 30 * 24 * H);
        let mut p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, 1, None, Limits::default()),
            1,
            Limits::default(),
        );
        p.advance(0, 0);
        assert_eq!(p.peek(), Some((5 * M, 5 * M + 5 * M * MAX_GROWTH - 1)));
    }

    #[test]
    fn dense_data_shrinks_windows_to_the_floor() {
        let (from, to) = (0, H);
        let mut p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, 1, None, Limits::default()),
            1,
            Limits::default(),
        );
        p.advance(u64::MAX / 2, 1);
        let (s, e) = p.peek().unwrap();
        assert_eq!(e - s + 1, MIN_WINDOW_MS);
    }

    #[test]
    fn windows_keep_whole_steps() {
        let step = 7 * M;
        let (from, to) = (3 * M, 50 * H);
        let p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, step, None, Limits::default()),
            step,
            Limits::default(),
        );
        let ws = run(p, 1.0, 20);
        contiguous(from, to, &ws);
        for &(_, e) in &ws[..ws.len() - 1] {
            assert_eq!((e + 1) % step, 0, "{e}");
        }
    }

    #[test]
    fn never_more_than_max_windows() {
        let (from, to) = (0, 253_402_300_799_000);
        let p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, 1, None, Limits::default()),
            1,
            Limits::default(),
        );
        assert!(p.remaining_estimate() <= MAX_WINDOWS);
        let mut p2 = p.clone();
        p2.advance(u64::MAX / 2, u64::MAX / 2);
        assert!(p2.remaining_estimate() <= MAX_WINDOWS);
    }

    #[test]
    fn counted_series_size_the_first_window() {
        let l = Limits::default();
        // 20,000 series over 6 h: 43.2 M points at 10 s, 28.8 M at 15 s: one call.
        let (from, to) = (1_000, 1_000 + 6 * H);
        let first = first_window_ms(from, to, 1, Some(20_000), l);
        let p = WindowPlanner::adaptive(from, to, first, 1, l);
        assert_eq!(run(p, 20_000.0 / 15_000.0, 22), [(from, to)]);
        // Nothing matched: one call too.
        assert!(first_window_ms(from, to, 1, Some(0), l) > 6 * H);
        // 200,000 series: the window that carries the target at 10 s.
        assert_eq!(first_window_ms(from, to, 1, Some(200_000), l), 2_000_000);
        // Never shorter than the probe, never longer than the growth cap.
        assert_eq!(first_window_ms(from, to, 1, Some(u64::MAX), l), PROBE_MS);
        let long = (0, 30 * 24 * H);
        assert_eq!(
            first_window_ms(long.0, long.1, 1, Some(1), l),
            PROBE_MS * MAX_GROWTH
        );
        // Whole steps with --step.
        assert_eq!(
            first_window_ms(from, to, 7 * M, Some(2_000_000), l) % (7 * M),
            0
        );
    }

    #[test]
    fn query_range_windows_are_capped() {
        let (from, to) = (0, 30 * 24 * H);
        let mut p = WindowPlanner::adaptive(
            from,
            to,
            first_window_ms(from, to, 1, None, Limits::default()),
            1,
            Limits::default(),
        );
        p.cap_len(10_000 * M);
        let ws = run(p, 0.001, 20);
        contiguous(from, to, &ws);
        assert!(ws.iter().all(|&(s, e)| e - s < 10_000 * M), "{ws:?}");
    }

    #[test]
    fn resume_continues_after_the_recorded_window() {
        let (from, to) = (0, 24 * H);
        let mk = || {
            WindowPlanner::adaptive(
                from,
                to,
                first_window_ms(from, to, 1, None, Limits::default()),
                1,
                Limits::default(),
            )
        };
        let mut a = mk();
        let first = a.peek().unwrap();
        a.advance(1_000_000, 20_000_000);
        let mut b = mk();
        b.resume_after(first.0, first.1, 1_000_000, 20_000_000);
        assert_eq!(a.peek(), b.peek());
    }
}
