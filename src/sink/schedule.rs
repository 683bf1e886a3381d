//! Time windows of a destination (`schedule:`): which samples it takes, by
//! the **sample's timestamp** read as wall-clock time in an IANA time zone,
//! so a replay routes a breach by when it happened, and 09:00 stays 09:00
//! across daylight-saving changes. The time zone database is compiled into
//! the binary (jiff's bundled tzdb), so a `FROM scratch` image needs no
//! `/usr/share/zoneinfo`.
//!
//! ```yaml
//! schedule: {days: [mon-fri], hours: "09:00-18:00", timezone: Europe/Berlin}
//! # or several windows:
//! schedule:
//!   timezone: America/New_York
//!   windows:
//!     - {days: [mon-fri], hours: "08:00-12:00,13:00-17:00"}
//!     - {days: [sat], hours: "22:00-06:00"}   # past midnight: Saturday 22:00 to Sunday 06:00
//! ```
//!
//! `days`: `mon`..`sun` (or full names), ranges (`mon-fri`, `fri-mon`);
//! all days when absent. `hours`: `HH:MM-HH:MM`, comma-separated, end
//! exclusive, `24:00` allowed as an end; a range whose end is not after its
//! start runs past midnight into the next day (and belongs to the day it
//! starts on). All day when absent. `timezone`: UTC when absent.

use std::fmt;

/// `schedule:` as written.
#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub days: Option<Vec<String>>,
    #[serde(default)]
    pub hours: Option<String>,
    #[serde(default)]
    pub windows: Option<Vec<WindowSpec>>,
}

#[derive(Clone, Debug, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    #[serde(default)]
    pub days: Option<Vec<String>>,
    #[serde(default)]
    pub hours: Option<String>,
}

/// What a destination does with samples outside its schedule
/// (`outside_schedule:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outside {
    /// Drop them, counted as `spillway_samples_dropped_total{reason="schedule"}`.
    Drop,
    /// Hand them to the destination of this name.
    Fallback(String),
}

/// A destination's schedule and what happens outside it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRoute {
    pub schedule: Schedule,
    pub outside: Outside,
}

/// A checked schedule.
#[derive(Clone)]
pub struct Schedule {
    timezone: String,
    tz: jiff::tz::TimeZone,
    windows: Vec<Window>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({}, {:?})", self.timezone, self.windows)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.timezone == other.timezone && self.windows == other.windows
    }
}

/// Days (Monday = bit 0) and one time range in minutes of the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    days: u8,
    start: u32,
    /// Exclusive; `<= start` runs past midnight.
    end: u32,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl Schedule {
    /// Checks a spec; each problem comes with the field it is about
    /// (`timezone`, `days`, `hours`, `windows[i].hours`, ...).
    pub fn new(spec: &ScheduleSpec) -> Result<Schedule, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let timezone = spec.timezone.clone().unwrap_or_else(|| "UTC".into());
        let tz = match jiff::tz::TimeZone::get(&timezone) {
            Ok(tz) => Some(tz),
            Err(_) => {
                problems.push((
                    "timezone".to_string(),
                    format!(
                        "{timezone:?} is not a time zone of the IANA database; use a name such as Europe/Berlin, America/New_York or UTC"
                    ),
                ));
                None
            }
        };
        let mut windows = Vec::new();
        let mut window_problems = Vec::new();
        let mut add = |prefix: &str, days: &Option<Vec<String>>, hours: &Option<String>| {
            let d = match days {
                None => Ok(0x7f),
                Some(list) => parse_days(list),
            };
            let h = parse_hours(hours.as_deref().unwrap_or("00:00-24:00"));
            match (d, h) {
                (Ok(d), Ok(h)) => windows.extend(h.into_iter().map(|(start, end)| Window {
                    days: d,
                    start,
                    end,
                })),
                (d, h) => {
                    if let Err(e) = d {
                        window_problems.push((format!("{prefix}days"), e));
                    }
                    if let Err(e) = h {
                        window_problems.push((format!("{prefix}hours"), e));
                    }
                }
            }
        };
        match &spec.windows {
            Some(list) => {
                if spec.days.is_some() || spec.hours.is_some() {
                    problems.push((
                        "windows".to_string(),
                        "give either days/hours or windows, not both".to_string(),
                    ));
                }
                for (i, w) in list.iter().enumerate() {
                    add(&format!("windows[{i}]."), &w.days, &w.hours);
                }
                if list.is_empty() {
                    problems.push((
                        "windows".to_string(),
                        "empty: the destination would take nothing; remove `schedule` or add a window".to_string(),
                    ));
                }
            }
            None => add("", &spec.days, &spec.hours),
        }
        problems.extend(window_problems);
        match tz {
            Some(tz) if problems.is_empty() => Ok(Schedule {
                timezone,
                tz,
                windows,
            }),
            _ => Err(problems),
        }
    }

    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// Whether a sample at `ts_ms` (Unix ms) falls in a window.
    pub fn contains(&self, ts_ms: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(ts_ms) else {
            return false;
        };
        let offset = self.tz.to_offset(ts).seconds() as i64;
        let local = ts_ms.div_euclid(1000) + offset;
        let days = local.div_euclid(86_400);
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        // 1970-01-01 was a Thursday (Monday = 0).
        let today = (days + 3).rem_euclid(7) as u8;
        let yesterday = (today + 6) % 7;
        self.windows.iter().any(|w| {
            let on = |d: u8| w.days & (1 << d) != 0;
            if w.start < w.end {
                on(today) && minute >= w.start && minute < w.end
            } else {
                (on(today) && minute >= w.start) || (on(yesterday) && minute < w.end)
            }
        })
    }
}

fn day_index(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == s)
        .or_else(|| FULL.iter().position(|d| *d == s))
        .map(|i| i as u8)
}

fn parse_days(list: &[String]) -> Result<u8, String> {
    let mut mask = 0u8;
    for item in list {
        for part in item.split(',') {
            let bad = || {
                format!(
                    "{part:?} is not a day or a range of days; use mon, tue, wed, thu, fri, sat, sun or a range such as mon-fri"
                )
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day_index(a).ok_or_else(bad)?, day_index(b).ok_or_else(bad)?);
                    let mut d = a;
                    loop {
                        mask |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => mask |= 1 << day_index(part).ok_or_else(bad)?,
            }
        }
    }
    if mask == 0 {
        return Err("no days given; remove `days` to mean every day".into());
    }
    Ok(mask)
}

/// `HH:MM` to minutes; `24:00` only as an end.
fn parse_time(s: &str, end: bool) -> Result<u32, String> {
    let s = s.trim();
    let bad =
        || format!("{s:?} is not a time of day; write HH:MM from 00:00 to 23:59 (24:00 as an end)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_hours(s: &str) -> Result<Vec<(u32, u32)>, String> {
    let mut out = Vec::new();
    for range in s.split(',') {
        let (a, b) = range.split_once('-').ok_or_else(|| {
            format!(
                "{:?} is not a range of hours; write e.g. \"09:00-18:00\"",
                range.trim()
            )
        })?;
        let (start, end) = (parse_time(a, false)?, parse_time(b, true)?);
        if start == end && !(start == 0 && end == 0) {
            return Err(format!(
                "{:?} is empty; for all day write 00:00-24:00",
                range.trim()
            ));
        }
        out.push(if start == 0 && end == 0 {
            (0, 1440)
        } else {
            (start, end)
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(yaml: &str) -> Schedule {
        let spec: ScheduleSpec = crate::model::yaml::from_str(yaml, "t").unwrap();
        Schedule::new(&spec).unwrap()
    }

    fn at(s: &str) -> i64 {
        crate::model::time::parse_timestamp_ms(s).unwrap()
    }

    #[test]
    fn business_hours_across_dst_in_berlin() {
        let s = sched("{days: [mon-fri], hours: '09:00-18:00', timezone: Europe/Berlin}");
        // Friday 2024-03-29, CET (UTC+1): 09:00 local = 08:00Z.
        assert!(!s.contains(at("2024-03-29T07:59:59Z")));
        assert!(s.contains(at("2024-03-29T08:00:00Z")));
        assert!(s.contains(at("2024-03-29T16:59:59.999Z")));
        assert!(!s.contains(at("2024-03-29T17:00:00Z")));
        // Clocks go forward on Sunday 31 March; Monday 1 April is CEST (UTC+2).
        assert!(!s.contains(at("2024-03-31T10:00:00Z")), "Sunday");
        assert!(!s.contains(at("2024-04-01T06:59:00Z")));
        assert!(s.contains(at("2024-04-01T07:00:00Z")), "09:00 CEST");
        assert!(!s.contains(at("2024-04-01T16:00:00Z")), "18:00 CEST");
        // And back on Sunday 27 October.
        assert!(s.contains(at("2024-10-25T07:00:00Z")), "Friday 09:00 CEST");
        assert!(!s.contains(at("2024-10-28T07:00:00Z")), "Monday 08:00 CET");
        assert!(s.contains(at("2024-10-28T08:00:00Z")), "Monday 09:00 CET");
    }

    #[test]
    fn windows_past_midnight_belong_to_their_first_day() {
        let s = sched(
            "{timezone: America/New_York, windows: [{days: [fri], hours: '22:00-06:00'}, {days: [sun], hours: '12:00-13:00,14:00-24:00'}]}",
        );
        // Friday 2024-11-01 22:30 EDT = 02:30Z Saturday.
        assert!(s.contains(at("2024-11-02T02:30:00Z")));
        // Saturday 05:59 EDT = 09:59Z; 06:00 is out.
        assert!(s.contains(at("2024-11-02T09:59:00Z")));
        assert!(!s.contains(at("2024-11-02T10:00:00Z")));
        // Thursday night is not Friday night.
        assert!(!s.contains(at("2024-11-01T02:30:00Z")));
        // Sunday 2024-11-03 is the DST end day: 12:30 EST = 17:30Z.
        assert!(s.contains(at("2024-11-03T17:30:00Z")));
        assert!(!s.contains(at("2024-11-03T18:30:00Z")), "13:30 EST");
        assert!(s.contains(at("2024-11-04T04:59:00Z")), "23:59 EST");
        assert!(!s.contains(at("2024-11-04T05:00:00Z")), "Monday 00:00");
    }

    #[test]
    fn bad_input_names_the_field() {
        let err = |yaml: &str| {
            let spec: ScheduleSpec = crate::model::yaml::from_str(yaml, "t").unwrap();
            Schedule::new(&spec).unwrap_err()
        };
        let e = err("{hours: '25:00-26:00'}");
        assert_eq!(e[0].0, "hours");
        assert!(e[0].1.contains("\"25:00\" is not a time of day"), "{e:?}");
        let e = err("{timezone: Europe/Berln}");
        assert_eq!(e[0].0, "timezone");
        assert!(
            e[0].1.contains("\"Europe/Berln\" is not a time zone"),
            "{e:?}"
        );
        let e = err("{windows: [{days: [funday]}]}");
        assert_eq!(e[0].0, "windows[0].days");
        assert!(err("{hours: '09:00'}")[0].1.contains("range of hours"));
        assert!(err("{hours: '24:00-01:00'}")[0].1.contains("24:00"));
        assert!(err("{hours: '09:00-09:00'}")[0].1.contains("empty"));
        assert!(sched("{days: [sat-sun, Monday]}").contains(at("2024-11-04T12:00:00Z")));
        assert!(sched("{hours: '00:00-00:00'}").contains(at("2024-11-04T12:00:00Z")));
    }
}
