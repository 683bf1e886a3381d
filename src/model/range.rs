//! Time ranges as every command takes them (`--since/--from/--to`, the same
//! fields in configs and in the web UI's JSON), and the one way a range is
//! cut into request windows.
//!
//! A range is resolved against one `now`, checked (each end between 1970 and
//! 9999, running forward, at most one of `since`/`from`), and its errors name
//! the field in the caller's notation ([`FLAGS`] or [`FIELDS`]). Windows are
//! produced lazily by [`Windows`], an iterator that holds five numbers
//! whatever the length of the range, and whose arithmetic is done in `i128`
//! so no timestamp near the 64-bit limits can wrap. A plan with more than
//! [`MAX_WINDOWS`] requests is refused by [`check_windows`] before anything
//! is fetched: such a range would run for days and is almost always a typo
//! (`--step 1ms`, `--since 10000y`).

use super::time::{duration_ms, format_duration, format_rfc3339_ms, TimeArg, TimeError};
use std::fmt;
use std::time::Duration;

/// The most requests (windows) one range may be cut into.
pub const MAX_WINDOWS: u64 = 100_000;

/// How the three range fields are called where they came from.
#[derive(Clone, Copy, Debug)]
pub struct RangeNames<'a> {
    pub since: &'a str,
    pub from: &'a str,
    pub to: &'a str,
}

/// Command-line flags.
pub const FLAGS: RangeNames<'static> = RangeNames {
    since: "--since",
    from: "--from",
    to: "--to",
};

/// Config or JSON fields.
pub const FIELDS: RangeNames<'static> = RangeNames {
    since: "since",
    from: "from",
    to: "to",
};

/// A range as written: any of `since`, `from` and `to`, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeInput {
    pub since: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What absent fields mean: the range is `since` long and ends `to_lag`
/// before now.
#[derive(Clone, Copy, Debug)]
pub struct RangeDefaults {
    pub since: Duration,
    pub to_lag: Duration,
}

impl Default for RangeDefaults {
    fn default() -> Self {
        RangeDefaults {
            since: Duration::from_secs(3600),
            to_lag: Duration::ZERO,
        }
    }
}

/// `[from_ms, to_ms]`, both inclusive, `from_ms <= to_ms`, both in
/// `MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A range that cannot be used; displays as `<field>: <reason>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RangeError {
    pub field: String,
    pub reason: String,
}

impl RangeError {
    fn new(field: &str, reason: impl fmt::Display) -> RangeError {
        RangeError {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl RangeInput {
    /// Resolves the range against `now_ms`.
    pub fn resolve(
        &self,
        names: &RangeNames<'_>,
        defaults: &RangeDefaults,
        now_ms: i64,
    ) -> Result<TimeRange, RangeError> {
        let time = |field: &str, v: &Option<String>| -> Result<Option<i64>, RangeError> {
            v.as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    TimeArg::parse(s)
                        .and_then(|t| t.resolve(now_ms))
                        .map_err(|e| RangeError::new(field, e))
                })
                .transpose()
        };
        let since = self
            .since
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                super::time::parse_duration(s)
                    .map(|d| (s, d))
                    .map_err(|e| RangeError::new(names.since, e))
            })
            .transpose()?;
        let to = match time(names.to, &self.to)? {
            Some(t) => t,
            None => TimeArg::Ago {
                text: format!("now-{}", format_duration(defaults.to_lag)),
                ago: defaults.to_lag,
            }
            .resolve(now_ms)
            .map_err(|e| RangeError::new(names.to, e))?,
        };
        let from = match (time(names.from, &self.from)?, since) {
            (Some(_), Some(_)) => {
                return Err(RangeError::new(
                    names.since,
                    format!("use either {} or {}, not both", names.since, names.from),
                ))
            }
            (Some(f), None) => f,
            (None, Some((text, d))) => back_from(to, d, names.since, text)?,
            (None, None) => {
                let text = format_duration(defaults.since);
                back_from(to, defaults.since, names.since, &text)?
            }
        };
        forward(from, to, names)
    }
}

/// A range given by its two ends (`replay --from T --to T`).
pub fn resolve_ends(
    from: &TimeArg,
    to: &TimeArg,
    names: &RangeNames<'_>,
    now_ms: i64,
) -> Result<TimeRange, RangeError> {
    let from = from
        .resolve(now_ms)
        .map_err(|e| RangeError::new(names.from, e))?;
    let to = to
        .resolve(now_ms)
        .map_err(|e| RangeError::new(names.to, e))?;
    forward(from, to, names)
}

fn forward(from: i64, to: i64, names: &RangeNames<'_>) -> Result<TimeRange, RangeError> {
    if from > to {
        return Err(RangeError::new(
            names.from,
            format!(
                "the range is empty: {} is after {} ({}); a range must run forward",
                format_rfc3339_ms(from),
                names.to,
                format_rfc3339_ms(to)
            ),
        ));
    }
    Ok(TimeRange {
        from_ms: from,
        to_ms: to,
    })
}

/// `to - d`, refused when it falls before 1970.
fn back_from(to: i64, d: Duration, field: &str, text: &str) -> Result<i64, RangeError> {
    let from = i128::from(to) - i128::from(duration_ms(d));
    if from < i128::from(super::time::MIN_TIMESTAMP_MS) {
        return Err(RangeError::new(
            field,
            format!(
                "{text} before {} reaches back before {}, the earliest time accepted",
                format_rfc3339_ms(to),
                format_rfc3339_ms(super::time::MIN_TIMESTAMP_MS)
            ),
        ));
    }
    Ok(from as i64)
}

impl From<TimeError> for RangeError {
    fn from(e: TimeError) -> Self {
        RangeError::new("time", e)
    }
}

/// An evaluation grid `first, first+step, ..., last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub first_ms: i64,
    pub last_ms: i64,
    pub step_ms: i64,
}

impl Grid {
    /// The multiples of `step` inside `[from, to]`; `None` when there are none.
    pub fn inward(from_ms: i64, to_ms: i64, step_ms: i64) -> Option<Grid> {
        assert!(step_ms > 0, "a grid needs a positive step");
        let step = i128::from(step_ms);
        let first = i128::from(from_ms).div_euclid(step) * step
            + if from_ms.rem_euclid(step_ms) == 0 {
                0
            } else {
                step
            };
        let last = i128::from(to_ms).div_euclid(step) * step;
        // Between from and to, hence inside i64.
        (first <= last).then_some(Grid {
            first_ms: first as i64,
            last_ms: last as i64,
            step_ms,
        })
    }

    /// `first..=last` by `step` as given (a grid not anchored at 0); `None`
    /// when `first > last`.
    pub fn new(first_ms: i64, last_ms: i64, step_ms: i64) -> Option<Grid> {
        assert!(step_ms > 0, "a grid needs a positive step");
        let span = i128::from(last_ms) - i128::from(first_ms);
        // Between first and last, hence inside i64.
        let last = (i128::from(last_ms) - span.rem_euclid(i128::from(step_ms))) as i64;
        (first_ms <= last_ms).then_some(Grid {
            first_ms,
            last_ms: last,
            step_ms,
        })
    }

    /// Grid points, saturating at `u64::MAX` (only a grid over all of i64 at
    /// 1 ms has more).
    pub fn points(&self) -> u64 {
        let n =
            (i128::from(self.last_ms) - i128::from(self.first_ms)) / i128::from(self.step_ms) + 1;
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Windows of `points` grid points each (the last may hold fewer).
    pub fn windows(&self, points: u64) -> Windows {
        let span = i128::from(self.step_ms) * i128::from(points.max(1));
        Windows::new(
            i128::from(self.first_ms),
            self.first_ms,
            self.last_ms,
            span,
            self.step_ms,
        )
    }

    /// The grid point after the last: where a following run continues.
    pub fn next_after_last(&self) -> i64 {
        self.last_ms.saturating_add(self.step_ms)
    }
}

/// Inclusive `(start, end)` windows, in order, covering `[from, last]`
/// exactly once: window `k` starts at `origin + k·span` (the first one at
/// `from`) and ends one `step` before the next one starts, or at `last`.
#[derive(Clone, Debug)]
pub struct Windows {
    edge: i128,
    from: i64,
    last: i64,
    span: i128,
    step: i128,
    remaining: u64,
}

impl Windows {
    fn new(origin: i128, from: i64, last: i64, span: i128, step: i64) -> Windows {
        let span = span.max(1);
        let from128 = i128::from(from);
        let last128 = i128::from(last);
        // Start at the last edge at or before `from`, so no window is empty.
        let edge = origin + (from128 - origin).div_euclid(span) * span;
        let remaining = if from128 > last128 {
            0
        } else {
            u64::try_from((last128 - edge) / span + 1).unwrap_or(u64::MAX)
        };
        Windows {
            edge,
            from,
            last,
            span,
            step: i128::from(step.max(1)),
            remaining,
        }
    }

    /// Millisecond windows of `window_ms` covering `[from, to]`, their edges
    /// on multiples of `align_ms` (1 for none) so that an aligned step
    /// interval is never split; `window_ms` should be a multiple of `align_ms`.
    pub fn aligned(from_ms: i64, to_ms: i64, window_ms: i64, align_ms: i64) -> Windows {
        let align = i128::from(align_ms.max(1));
        let origin = i128::from(from_ms).div_euclid(align) * align;
        Windows::new(origin, from_ms, to_ms, i128::from(window_ms.max(1)), 1)
    }

    /// A plan with no window (a range with no grid point).
    pub fn empty() -> Windows {
        Windows::new(0, 1, 0, 1, 1)
    }

    /// Windows still to come (named apart from `Iterator::count`, which
    /// would walk them).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

impl Iterator for Windows {
    type Item = (i64, i64);

    fn next(&mut self) -> Option<(i64, i64)> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let start = self.edge.max(i128::from(self.from));
        let end = (self.edge + self.span - self.step).min(i128::from(self.last));
        self.edge += self.span;
        // Both lie within [from, last].
        Some((start as i64, end as i64))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Windows {}

/// Refuses a plan of more than [`MAX_WINDOWS`] requests. `what` describes
/// the range and how it is cut ("--since 1y at --step 1ms, 720 points per
/// request"), `hint` what to change.
pub fn check_windows(count: u64, what: &str, hint: &str) -> Result<(), String> {
    if count <= MAX_WINDOWS {
        return Ok(());
    }
    Err(format!(
        "{what} makes {} requests, more than the {} allowed: {hint}",
        group_digits(count),
        group_digits(MAX_WINDOWS)
    ))
}

/// `1234567` → `1,234,567`, for counts in messages.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};

    const NOW: i64 = 1_714_521_600_000; // 2024-05-01T00:00:00Z

    fn input(since: Option<&str>, from: Option<&str>, to: Option<&str>) -> RangeInput {
        RangeInput {
            since: since.map(Into::into),
            from: from.map(Into::into),
            to: to.map(Into::into),
        }
    }

    #[test]
    fn since_from_to() {
        let d = RangeDefaults::default();
        let r = input(Some("2h"), None, None)
            .resolve(&FLAGS, &d, NOW)
            .unwrap();
        assert_eq!((r.from_ms, r.to_ms), (NOW - 7_200_000, NOW));
        let r = input(None, Some("now-6h"), Some("now-1h"))
            .resolve(&FLAGS, &d, NOW)
            .unwrap();
        assert_eq!((r.from_ms, r.to_ms), (NOW - 6 * 3_600_000, NOW - 3_600_000));
        let r = input(None, None, None).resolve(&FLAGS, &d, NOW).unwrap();
        assert_eq!(r.to_ms - r.from_ms, 3_600_000);
        let lagged = RangeDefaults {
            since: Duration::from_secs(60),
            to_lag: Duration::from_secs(60),
        };
        let r = input(None, None, None)
            .resolve(&FLAGS, &lagged, NOW)
            .unwrap();
        assert_eq!((r.from_ms, r.to_ms), (NOW - 120_000, NOW - 60_000));
        let r = input(Some("1h"), None, Some("1714521600"))
            .resolve(&FIELDS, &d, 0)
            .unwrap();
        assert_eq!(r.to_ms, NOW);
    }

    #[test]
    fn errors_name_the_field() {
        let d = RangeDefaults::default();
        let e = input(Some("1h"), Some("now-2h"), None)
            .resolve(&FLAGS, &d, NOW)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--since: use either --since or --from, not both"
        );
        let e = input(None, Some("now"), Some("now-1h"))
            .resolve(&FIELDS, &d, NOW)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("from: the range is empty: 2024-05-01T00:00:00Z is after to"),
            "{e}"
        );
        let e = input(Some("soon"), None, None)
            .resolve(&FLAGS, &d, NOW)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--since: invalid duration \"soon\""),
            "{e}"
        );
    }

    /// Regression (#14.2): `since: 10000y` (one unauthenticated request to the
    /// UI) and `--from now-10000y` planned windows back to year -7976.
    #[test]
    fn ranges_stay_within_1970_and_9999() {
        let d = RangeDefaults::default();
        let e = input(Some("10000y"), None, None)
            .resolve(&FIELDS, &d, NOW)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "since: 10000y before 2024-05-01T00:00:00Z reaches back before 1970-01-01T00:00:00Z, the earliest time accepted"
        );
        let e = input(None, Some("now-10000y"), None)
            .resolve(&FLAGS, &d, NOW)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--from: time \"now-10000y\" is before 1970"),
            "{e}"
        );
        let e = input(None, Some("0"), Some("9223372036854775807"))
            .resolve(&FLAGS, &d, NOW)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--to: time \"9223372036854775807\" is after 9999"),
            "{e}"
        );
    }

    #[test]
    fn grid_windows_cover_the_grid_once() {
        let g = Grid::inward(1001, 10_000, 1000).unwrap();
        assert_eq!((g.first_ms, g.last_ms, g.points()), (2000, 10_000, 9));
        let w = g.windows(3);
        assert_eq!(w.remaining(), 3);
        assert_eq!(
            w.collect::<Vec<_>>(),
            vec![(2000, 4000), (5000, 7000), (8000, 10_000)]
        );
        let g = Grid::inward(0, 4000, 1000).unwrap();
        assert_eq!(
            g.windows(2).collect::<Vec<_>>(),
            vec![(0, 1000), (2000, 3000), (4000, 4000)]
        );
        assert!(Grid::inward(1001, 1999, 1000).is_none());
        assert_eq!(g.next_after_last(), 5000);
        // A grid not anchored at 0 (replay's unaligned groups).
        let g = Grid::new(1500, 4000, 1000).unwrap();
        assert_eq!(g.last_ms, 3500);
        assert_eq!(
            g.windows(2).collect::<Vec<_>>(),
            vec![(1500, 2500), (3500, 3500)]
        );
        let g = Grid::new(i64::MIN, i64::MAX, 1 << 62).unwrap();
        assert_eq!(g.points(), 4);
    }

    #[test]
    fn aligned_windows() {
        let all = |w: Windows| w.collect::<Vec<_>>();
        assert_eq!(
            all(Windows::aligned(0, 99_999, 30_000, 1)),
            [
                (0, 29_999),
                (30_000, 59_999),
                (60_000, 89_999),
                (90_000, 99_999)
            ]
        );
        assert_eq!(all(Windows::aligned(0, 0, 30_000, 1)), [(0, 0)]);
        assert_eq!(
            all(Windows::aligned(90_000, 250_000, 120_000, 60_000)),
            [(90_000, 179_999), (180_000, 250_000)]
        );
        assert!(all(Windows::aligned(5, 4, 10, 1)).is_empty());
    }

    /// Regression (#14.2): `first + k·span` overflowed near the 64-bit limit
    /// and a `to` at the maximum never ended; the plan was a Vec of every window.
    #[test]
    fn extreme_ranges_are_counted_not_built() {
        let w = Windows::aligned(i64::MIN, i64::MAX, 1, 1);
        assert_eq!(w.remaining(), u64::MAX);
        let w = Windows::aligned(i64::MAX - 10, i64::MAX, 3, 1);
        assert_eq!(
            w.collect::<Vec<_>>(),
            [
                (i64::MAX - 10, i64::MAX - 8),
                (i64::MAX - 7, i64::MAX - 5),
                (i64::MAX - 4, i64::MAX - 2),
                (i64::MAX - 1, i64::MAX)
            ]
        );
        let g = Grid::inward(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS, 1).unwrap();
        assert_eq!(g.windows(720).remaining(), 351_947_640_000);
        let e = check_windows(g.windows(720).remaining(), "the range", "use a larger step")
            .unwrap_err();
        assert_eq!(
            e,
            "the range makes 351,947,640,000 requests, more than the 100,000 allowed: use a larger step"
        );
        assert!(check_windows(MAX_WINDOWS, "x", "y").is_ok());
    }
}
