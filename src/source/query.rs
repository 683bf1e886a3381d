//! Range queries over long periods, split into windows on the step grid.
//!
//! Every evaluation timestamp is a multiple of `step` (as VictoriaMetrics
//! aligns them anyway), windows never overlap and never leave a gap, and
//! each window is streamed, so memory does not grow with the range. The
//! grid and the windows are `model::range`'s, the one splitter every
//! command uses; they are produced lazily.

use crate::model::range::{Grid, Windows};

/// The aligned evaluation grid `first, first+step, ..., last` and how to cut it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangePlan {
    /// First evaluation timestamp (ms), a multiple of `step_ms`.
    pub first_ms: i64,
    /// Last evaluation timestamp (ms), a multiple of `step_ms`, `>= first_ms`.
    pub last_ms: i64,
    pub step_ms: i64,
    /// Evaluation points per window.
    pub window_points: i64,
}

impl RangePlan {
    /// Aligns `[from, to]` inward to the step grid; `None` when no grid point falls inside.
    pub fn new(from_ms: i64, to_ms: i64, step_ms: i64, window_points: i64) -> Option<RangePlan> {
        assert!(step_ms > 0 && window_points > 0);
        Grid::inward(from_ms, to_ms, step_ms).map(|g| RangePlan {
            first_ms: g.first_ms,
            last_ms: g.last_ms,
            step_ms,
            window_points,
        })
    }

    fn grid(&self) -> Grid {
        Grid {
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            step_ms: self.step_ms,
        }
    }

    pub fn points(&self) -> u64 {
        self.grid().points()
    }

    /// Inclusive `(start, end)` pairs covering the grid exactly once, lazily.
    pub fn windows(&self) -> Windows {
        self.grid().windows(self.window_points.unsigned_abs())
    }

    pub fn window_count(&self) -> u64 {
        self.windows().remaining()
    }

    /// Where the next run continues so that runs neither overlap nor leave a gap.
    pub fn next_from_ms(&self) -> i64 {
        self.grid().next_after_last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_grid_once() {
        let p = RangePlan::new(1001, 10_000, 1000, 3).unwrap();
        assert_eq!(p.first_ms, 2000);
        assert_eq!(p.last_ms, 10_000);
        let w: Vec<_> = p.windows().collect();
        assert_eq!(w, vec![(2000, 4000), (5000, 7000), (8000, 10_000)]);
        assert_eq!(p.window_count(), 3);
        assert_eq!(p.points(), 9);
        assert_eq!(p.next_from_ms(), 11_000);
        let mut grid = vec![];
        for (s, e) in p.windows() {
            grid.extend((s..=e).step_by(1000));
        }
        assert_eq!(grid, (2000..=10_000).step_by(1000).collect::<Vec<_>>());
    }

    #[test]
    fn partial_last_window_and_empty_ranges() {
        let p = RangePlan::new(0, 4000, 1000, 2).unwrap();
        assert_eq!(
            p.windows().collect::<Vec<_>>(),
            vec![(0, 1000), (2000, 3000), (4000, 4000)]
        );
        assert!(RangePlan::new(1001, 1999, 1000, 2).is_none());
        assert_eq!(RangePlan::new(1000, 1000, 1000, 2).unwrap().points(), 1);
    }

    /// Regression (#14.2): a year at 1 ms steps planned every window up front
    /// (~700 MB before the first request); the plan is now counted, not built.
    #[test]
    fn a_huge_plan_takes_no_memory() {
        let p = RangePlan::new(0, 365 * 86_400_000, 1, 720).unwrap();
        assert_eq!(p.window_count(), 43_800_001);
        let mut w = p.windows();
        assert_eq!(w.next(), Some((0, 719)));
        assert_eq!(w.remaining(), 43_800_000);
    }
}
