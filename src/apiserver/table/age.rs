//! Ages and durations as `kubectl get` prints them.
//!
//! Copies `k8s.io/apimachinery/pkg/util/duration.HumanDuration` and the
//! printers' `translateTimestampSince`: a missing or zero timestamp prints
//! `<unknown>`, a timestamp more than two seconds in the future prints
//! `<invalid>` (clock skew below that reads as `0s`).
//!
//! Invariants: nothing here panics, whatever the input. Durations are
//! clamped to Go's `time.Duration` range (±~292 years) because upstream
//! computes them as an `int64` count of nanoseconds that saturates.

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

/// What upstream prints for a timestamp that is absent or the zero time.
pub(super) const UNKNOWN: &str = "<unknown>";

/// What upstream prints for a timestamp it cannot parse (custom columns).
pub(super) const INVALID: &str = "<invalid>";

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MINUTE;

/// Go's `time.Time{}` serialises as this instant; upstream treats it as unset.
fn is_go_zero_time(ts: Timestamp) -> bool {
    // 0001-01-01T00:00:00Z is 62135596800 seconds before the Unix epoch.
    ts.as_second() == -62_135_596_800 && ts.subsec_nanosecond() == 0
}

/// Reads a `metav1.Time`/`metav1.MicroTime` field.
///
/// `None` means "zero time" to upstream: the field is missing, `null`, the
/// empty string or Go's zero instant. An unparseable string is also `None`:
/// upstream could never have decoded such an object at all, and printing
/// `<unknown>` is the closest harmless answer.
pub(super) fn parse(value: Option<&Value>) -> Option<Timestamp> {
    let text = value?.as_str()?;
    let ts: Timestamp = text.parse().ok()?;
    (!is_go_zero_time(ts)).then_some(ts)
}

/// Parses like `metav1.Time.UnmarshalQueryParameter`: empty and `"null"`
/// are the zero time (`Ok(None)`), anything else must be RFC 3339.
pub(super) fn parse_query_parameter(text: &str) -> Result<Option<Timestamp>, jiff::Error> {
    if text.is_empty() || text == "null" {
        return Ok(None);
    }
    let ts: Timestamp = text.parse()?;
    Ok((!is_go_zero_time(ts)).then_some(ts))
}

/// `translateTimestampSince`: the age of `ts` at `now`, or `<unknown>`.
pub(super) fn since(ts: Option<Timestamp>, now: Timestamp) -> String {
    match ts {
        Some(ts) => human_duration(now.duration_since(ts)),
        None => UNKNOWN.to_string(),
    }
}

/// The AGE cell of any object: the age of `metadata.creationTimestamp`.
pub(super) fn of_object(obj: &Value, now: Timestamp) -> String {
    since(parse(obj.pointer("/metadata/creationTimestamp")), now)
}

/// Go's `time.Duration` is an `int64` of nanoseconds; `Time.Sub` saturates.
fn go_nanos(d: SignedDuration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(if d.is_negative() { i64::MIN } else { i64::MAX })
}

/// `duration.HumanDuration`: about two to three significant figures.
pub fn human_duration(d: SignedDuration) -> String {
    let nanos = go_nanos(d);
    // Go's int(d.Seconds()) truncates toward zero, so -1.9s is -1 ("0s").
    let seconds = nanos / NANOS_PER_SECOND;
    if seconds < -1 {
        return INVALID.to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / NANOS_PER_MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / NANOS_PER_HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: i64) -> String {
        human_duration(SignedDuration::from_secs(s))
    }

    #[test]
    fn human_duration_matches_upstream_table() {
        // Cases from upstream's duration_test.go plus each boundary.
        let cases: &[(i64, &str)] = &[
            (-3, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600 - 1, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 3599, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400 - 1, "7d23h"),
            (8 * 86400, "8d"),
            (45 * 86400, "45d"),
            (2 * 365 * 86400 - 1, "729d"),
            (2 * 365 * 86400, "2y"),
            ((2 * 365 + 100) * 86400, "2y100d"),
            (8 * 365 * 86400 - 1, "7y364d"),
            (8 * 365 * 86400, "8y"),
            (30 * 365 * 86400, "30y"),
        ];
        for (input, want) in cases {
            assert_eq!(secs(*input), *want, "{input}s");
        }
    }

    #[test]
    fn sub_second_skew_in_the_future_is_now() {
        assert_eq!(human_duration(SignedDuration::from_millis(-1900)), "0s");
        assert_eq!(
            human_duration(SignedDuration::from_millis(-2000)),
            "<invalid>"
        );
    }

    #[test]
    fn huge_durations_saturate_like_go() {
        // Go's Duration tops out at ~292 years.
        assert_eq!(human_duration(SignedDuration::MAX), "292y");
    }

    #[test]
    fn zero_missing_and_garbage_timestamps_are_unknown() {
        let now: Timestamp = "2024-05-01T00:00:00Z".parse().unwrap();
        for obj in [
            json!({}),
            json!({"metadata": {}}),
            json!({"metadata": {"creationTimestamp": null}}),
            json!({"metadata": {"creationTimestamp": ""}}),
            json!({"metadata": {"creationTimestamp": "0001-01-01T00:00:00Z"}}),
            json!({"metadata": {"creationTimestamp": 12}}),
            json!({"metadata": {"creationTimestamp": "yesterday"}}),
        ] {
            assert_eq!(of_object(&obj, now), "<unknown>", "{obj}");
        }
        let obj = json!({"metadata": {"creationTimestamp": "2024-04-30T23:55:00Z"}});
        assert_eq!(of_object(&obj, now), "5m");
    }

    #[test]
    fn micro_time_with_fraction_parses() {
        let now: Timestamp = "2024-05-01T00:00:10Z".parse().unwrap();
        let t = json!("2024-05-01T00:00:00.123456Z");
        assert_eq!(since(parse(Some(&t)), now), "9s");
    }

    #[test]
    fn query_parameter_parsing() {
        assert_eq!(parse_query_parameter("").unwrap(), None);
        assert_eq!(parse_query_parameter("null").unwrap(), None);
        assert!(parse_query_parameter("not a time").is_err());
        assert!(parse_query_parameter("2024-05-01T00:00:00Z")
            .unwrap()
            .is_some());
    }
}
