//! Range queries over long periods, split into windows on the step grid.
//!
//! Every evaluation timestamp is a multiple of `step` (as VictoriaMetrics
//! aligns them anyway), windows never overlap and never leave a gap, and
//! each window is streamed, so memory does not grow with the range.

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
        let first = from_ms.div_euclid(step_ms) * step_ms
            + if from_ms.rem_euclid(step_ms) == 0 {
                0
            } else {
                step_ms
            };
        let last = to_ms.div_euclid(step_ms) * step_ms;
        (first <= last).then_some(RangePlan {
            first_ms: first,
            last_ms: last,
            step_ms,
            window_points,
        })
    }

    pub fn points(&self) -> i64 {
        (self.last_ms - self.first_ms) / self.step_ms + 1
    }

    /// Inclusive `(start, end)` pairs covering the grid exactly once.
    pub fn windows(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        let span = self.window_points * self.step_ms;
        (0..)
            .map(move |k| self.first_ms + k * span)
            .take_while(move |s| *s <= self.last_ms)
            .map(move |s| (s, (s + span - self.step_ms).min(self.last_ms)))
    }

    pub fn window_count(&self) -> u64 {
        ((self.points() + self.window_points - 1) / self.window_points) as u64
    }

    /// Where the next run continues so that runs neither overlap nor leave a gap.
    pub fn next_from_ms(&self) -> i64 {
        self.last_ms + self.step_ms
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
}
