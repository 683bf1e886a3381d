//! Time as users write it: Prometheus durations (`90s`, `1h30m`, `7d`) and
//! timestamps (RFC 3339 or unix seconds), and RFC 3339 UTC for output.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TimeError {
    #[error("invalid duration {0:?}: expected a number and a unit like 30s, 5m, 1h30m, 7d (units: ms s m h d w y)")]
    Duration(String),
    #[error(
        "invalid time {0:?}: expected RFC 3339 (2024-01-02T15:04:05Z) or unix seconds (1704207845)"
    )]
    Timestamp(String),
}

/// Parses a Prometheus-style duration. A bare number means seconds, as
/// VictoriaMetrics accepts for `step`.
pub fn parse_duration(input: &str) -> Result<Duration, TimeError> {
    let s = input.trim();
    let err = || TimeError::Duration(input.to_string());
    if s.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(err());
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total_ms = total_ms
            .checked_add(n.checked_mul(unit_ms).ok_or_else(err)?)
            .ok_or_else(err)?;
    }
    u64::try_from(total_ms)
        .map(Duration::from_millis)
        .map_err(|_| err())
}

/// Formats a duration the short Prometheus way (`1h30m`, `15s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Parses RFC 3339 or unix seconds (fractions allowed) into unix milliseconds.
pub fn parse_timestamp_ms(input: &str) -> Result<i64, TimeError> {
    let s = input.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() {
            return Ok((secs * 1000.0).round() as i64);
        }
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| TimeError::Timestamp(input.to_string()))
}

/// `2024-01-02T15:04:05.123Z`; whole seconds print without a fraction.
pub fn format_rfc3339_ms(timestamp_ms: i64) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp_millis(timestamp_ms) else {
        return timestamp_ms.to_string();
    };
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A compact, sortable, file-name-safe UTC stamp: `20240102T150405Z`.
pub fn file_stamp(timestamp_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(timestamp_ms)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|| timestamp_ms.to_string())
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Rounds `ts` down to a multiple of `step` (both in ms).
pub fn align_down(ts: i64, step: i64) -> i64 {
    if step <= 0 {
        return ts;
    }
    ts.div_euclid(step) * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ms("1704207845").unwrap(), 1_704_207_845_000);
        assert_eq!(
            parse_timestamp_ms("1704207845.5").unwrap(),
            1_704_207_845_500
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-02T15:04:05Z").unwrap(),
            1_704_207_845_000
        );
        assert_eq!(
            parse_timestamp_ms("2024-01-02T16:04:05+01:00").unwrap(),
            1_704_207_845_000
        );
        assert!(parse_timestamp_ms("yesterday").is_err());
        assert_eq!(format_rfc3339_ms(1_704_207_845_000), "2024-01-02T15:04:05Z");
        assert_eq!(
            format_rfc3339_ms(1_704_207_845_123),
            "2024-01-02T15:04:05.123Z"
        );
        assert_eq!(file_stamp(1_704_207_845_000), "20240102T150405Z");
        assert_eq!(align_down(1005, 10), 1000);
        assert_eq!(align_down(-5, 10), -10);
    }
}
