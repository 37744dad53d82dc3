//! CronJob schedules, as upstream parses them (robfig/cron's standard parser): five fields
//! (minute, hour, day of month, month, day of week) with `*`, `?`, ranges `a-b`, steps `/n`,
//! lists `,` and month/weekday names; the descriptors `@yearly`/`@annually`, `@monthly`,
//! `@weekly`, `@daily`/`@midnight`, `@hourly`; an optional `TZ=<zone>` or `CRON_TZ=<zone>`
//! prefix. As upstream, when both day fields are restricted a time matches either of them,
//! otherwise both.
//!
//! Times are computed in the schedule's zone (the CronJob's `spec.timeZone`, the prefix, or
//! UTC, which is what kube-controller-manager's local zone is in a container) so that
//! "0 9 * * *" in `Europe/Berlin` follows daylight saving time.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether the day-of-month or day-of-week field was `*` / `?`.
    any_day: bool,
    any_weekday: bool,
    pub zone: TimeZone,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("expected exactly 5 fields, found {0}: {1}")]
    FieldCount(usize, String),
    #[error("{0}")]
    Field(String),
    #[error("unknown time zone {0}")]
    Zone(String),
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], offset: u32) -> Result<u32, ParseError> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + offset);
    }
    s.parse()
        .map_err(|_| ParseError::Field(format!("failed to parse int from {s}")))
}

/// One field as a bit set; the bool says whether it was a wildcard.
fn field(
    spec: &str,
    min: u32,
    max: u32,
    names: &[&str],
    offset: u32,
) -> Result<(u64, bool), ParseError> {
    let mut bits = 0u64;
    let mut star = false;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| ParseError::Field(format!("failed to parse int from {s}")))?;
                if step == 0 {
                    return Err(ParseError::Field(format!(
                        "step of range should be a positive number: {part}"
                    )));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            if step.is_none() {
                star = true;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, offset)?, value(b, names, offset)?)
        } else {
            let v = value(range, names, offset)?;
            (v, if step.is_some() { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(ParseError::Field(format!(
                "{part}: values must be within {min}-{max} and ascending"
            )));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parse `schedule`, in `time_zone` when given (`spec.timeZone`).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, ParseError> {
        let mut text = schedule.trim();
        let mut zone_name = time_zone.map(str::to_string);
        for prefix in ["TZ=", "CRON_TZ="] {
            if let Some(rest) = text.strip_prefix(prefix) {
                let (z, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                zone_name = Some(z.to_string());
                text = rest.trim();
            }
        }
        let zone = match zone_name.as_deref() {
            None | Some("") | Some("UTC") | Some("Etc/UTC") => TimeZone::UTC,
            Some(z) => TimeZone::get(z).map_err(|_| ParseError::Zone(z.to_string()))?,
        };
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ParseError::FieldCount(fields.len(), expanded.to_string()));
        }
        let (minutes, _) = field(fields[0], 0, 59, &[], 0)?;
        let (hours, _) = field(fields[1], 0, 23, &[], 0)?;
        let (days, any_day) = field(fields[2], 1, 31, &[], 0)?;
        let (months, _) = field(fields[3], 1, 12, &MONTHS, 1)?;
        let (weekdays, any_weekday) = field(fields[4], 0, 6, &DAYS, 0)?;
        Ok(Self {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
            zone,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.any_day || self.any_weekday {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after` (None if there is none within 5 years).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(self.zone.clone()).datetime();
        // The next whole minute.
        let mut t = DateTime::from_parts(
            start.date(),
            Time::new(start.hour(), start.minute(), 0, 0).ok()?,
        )
        .checked_add(1.minute())
        .ok()?;
        let limit = t.year() + 5;
        while t.year() <= limit {
            if self.months & (1 << t.month()) == 0 {
                let first = t.date().first_of_month().checked_add(1.month()).ok()?;
                t = first.to_datetime(Time::midnight());
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = DateTime::from_parts(t.date(), Time::new(t.hour(), 0, 0, 0).ok()?)
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = self.zone.to_ambiguous_timestamp(t).compatible().ok()?;
            if ts > after {
                return Some(ts);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn every_minute_and_steps() {
        let s = Schedule::parse("*/1 * * * *", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.next_after(ts("2026-03-01T10:00:30Z")),
            Some(ts("2026-03-01T10:01:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-03-01T10:01:00Z")),
            Some(ts("2026-03-01T10:02:00Z"))
        );
        let s = Schedule::parse("5-20/5 3 * * *", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.next_after(ts("2026-03-01T03:06:00Z")),
            Some(ts("2026-03-01T03:10:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-03-01T03:20:00Z")),
            Some(ts("2026-03-02T03:05:00Z"))
        );
    }

    #[test]
    fn names_descriptors_and_day_semantics() {
        let s = Schedule::parse("0 0 * JAN,feb MON", None).unwrap_or_else(|e| panic!("{e}"));
        // 2026-01-05 is a Monday.
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-05T00:00:00Z"))
        );
        let s = Schedule::parse("@monthly", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.next_after(ts("2026-01-15T00:00:00Z")),
            Some(ts("2026-02-01T00:00:00Z"))
        );
        // Both day fields restricted: either matches (the 13th, or any Friday).
        let s = Schedule::parse("0 12 13 * 5", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.next_after(ts("2026-02-01T00:00:00Z")),
            Some(ts("2026-02-06T12:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-02-12T00:00:00Z")),
            Some(ts("2026-02-13T12:00:00Z"))
        );
    }

    #[test]
    fn time_zones_from_prefix_or_field() {
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
        let s =
            Schedule::parse("TZ=Europe/Berlin 0 9 * * *", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.next_after(ts("2026-01-10T12:00:00Z")),
            Some(ts("2026-01-11T08:00:00Z"))
        );
        let s =
            Schedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.next_after(ts("2026-07-10T12:00:00Z")),
            Some(ts("2026-07-11T07:00:00Z"))
        );
        assert!(matches!(
            Schedule::parse("0 9 * * *", Some("Mars/Olympus")),
            Err(ParseError::Zone(z)) if z == "Mars/Olympus"
        ));
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
            "* * * * 8",
        ] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad}");
        }
    }
}
