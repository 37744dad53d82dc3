//! apimachinery types whose JSON form is written by hand upstream (a custom
//! `MarshalJSON`), so the generic field walk must not touch them.
//!
//! Each conversion copies the upstream Go code named beside it:
//! - `meta/v1.Time` (time.go, time_proto.go): proto `{seconds, nanos}`; the
//!   proto decoder drops nanos; JSON is RFC 3339 in UTC with whole seconds;
//!   zero time (empty message) is `null`.
//! - `meta/v1.MicroTime` (micro_time*.go): same, but nanos are truncated to
//!   microseconds and JSON always has 6 fractional digits.
//! - `meta/v1.Duration` (duration.go): nanoseconds, JSON is Go's
//!   `time.Duration.String()` ("1h2m3.5s", "0s").
//! - `resource.Quantity` (quantity_proto.go): the wire carries the canonical
//!   string Go's `Quantity.String()` wrote; JSON is that string, zero is "0".
//! - `intstr.IntOrString` (intstr.go): number or string chosen by `type`.
//! - `runtime.RawExtension`, `meta/v1.FieldsV1`, apiextensions `JSON`: raw JSON
//!   bytes embedded verbatim; nil is `null`. A RawExtension holding a
//!   protobuf-encoded object (`k8s\0` prefix) is decoded recursively.
//! - apiextensions `JSONSchemaPropsOr{Array,Bool,StringArray}` (marshal.go).
//!
//! Invariant: no input makes these functions panic; values Go's encoder would
//! refuse (years outside 0..=9999, bad IntOrString type) become errors.

use base64::Engine;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value as PValue};
use serde_json::Value;

use super::object::Converter;
use super::ProtobufError;

/// The hand-marshalled types, identified by full proto name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    Time,
    MicroTime,
    Duration,
    Quantity,
    IntOrString,
    RawExtension,
    FieldsV1,
    Json,
    PropsOrArray,
    PropsOrBool,
    PropsOrStringArray,
    /// `meta/v1.Timestamp` only exists as the wire shape of Time; never a field.
    Timestamp,
}

const APIEXT_V1: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.";
const APIEXT_V1BETA1: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.";

impl Special {
    pub(super) fn of(message: &MessageDescriptor) -> Option<Special> {
        let name = message.full_name();
        if let Some(local) = name.strip_prefix("k8s.io.apimachinery.pkg.apis.meta.v1.") {
            return match local {
                "Time" => Some(Special::Time),
                "MicroTime" => Some(Special::MicroTime),
                "Duration" => Some(Special::Duration),
                "FieldsV1" => Some(Special::FieldsV1),
                "Timestamp" => Some(Special::Timestamp),
                _ => None,
            };
        }
        match name {
            // QuantityValue (a pflag wrapper) shares Quantity's wire form.
            "k8s.io.apimachinery.pkg.api.resource.Quantity"
            | "k8s.io.apimachinery.pkg.api.resource.QuantityValue" => {
                return Some(Special::Quantity)
            }
            "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => return Some(Special::IntOrString),
            "k8s.io.apimachinery.pkg.runtime.RawExtension" => return Some(Special::RawExtension),
            _ => {}
        }
        let local = name
            .strip_prefix(APIEXT_V1)
            .or_else(|| name.strip_prefix(APIEXT_V1BETA1))?;
        match local {
            "JSON" => Some(Special::Json),
            "JSONSchemaPropsOrArray" => Some(Special::PropsOrArray),
            "JSONSchemaPropsOrBool" => Some(Special::PropsOrBool),
            "JSONSchemaPropsOrStringArray" => Some(Special::PropsOrStringArray),
            _ => None,
        }
    }
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds.
const GO_ZERO_TIME: i64 = -62_135_596_800;

pub(super) fn to_json(
    conv: &Converter<'_>,
    special: Special,
    msg: &DynamicMessage,
    depth: usize,
) -> Result<Value, ProtobufError> {
    let at = || msg.descriptor().full_name().to_string();
    match special {
        Special::Time | Special::MicroTime | Special::Timestamp => {
            if !has(msg, 1) && !has(msg, 2) {
                return Ok(Value::Null);
            }
            let seconds = int(msg, 1);
            let nanos = int(msg, 2);
            if special == Special::MicroTime {
                // time.Unix normalises out-of-range nanos into seconds.
                let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
                let secs = i64::try_from(total.div_euclid(1_000_000_000))
                    .map_err(|_| ProtobufError::invalid(at(), "time out of range"))?;
                let micros = (total.rem_euclid(1_000_000_000) / 1_000) as u32;
                if secs == GO_ZERO_TIME && micros == 0 {
                    return Ok(Value::Null);
                }
                return rfc3339(secs, Some(micros))
                    .map(Value::String)
                    .map_err(|r| ProtobufError::invalid(at(), r));
            }
            if seconds == GO_ZERO_TIME {
                return Ok(Value::Null);
            }
            rfc3339(seconds, None)
                .map(Value::String)
                .map_err(|r| ProtobufError::invalid(at(), r))
        }
        Special::Duration => Ok(Value::String(go_duration(int(msg, 1)))),
        Special::Quantity => match msg.get_field_by_number(1).as_deref() {
            Some(PValue::String(s)) if has(msg, 1) => {
                if s.is_empty() {
                    // ParseQuantity("") fails upstream.
                    return Err(ProtobufError::invalid(at(), "empty quantity"));
                }
                Ok(Value::String(s.clone()))
            }
            _ => Ok(Value::String("0".into())),
        },
        Special::IntOrString => match int(msg, 1) {
            0 => Ok(Value::from(int(msg, 2))),
            1 => match msg.get_field_by_number(3).as_deref() {
                Some(PValue::String(s)) => Ok(Value::String(s.clone())),
                _ => Ok(Value::String(String::new())),
            },
            t => Err(ProtobufError::invalid(
                at(),
                format!("impossible IntOrString.Type {t}"),
            )),
        },
        Special::RawExtension => match bytes(msg, 1) {
            None => Ok(Value::Null),
            Some(raw) if raw.starts_with(super::MAGIC) => super::decode_nested(&raw, depth + 1),
            Some(raw) => embedded_json(&raw, &at),
        },
        Special::FieldsV1 | Special::Json => match bytes(msg, 1) {
            Some(raw) if !raw.is_empty() => embedded_json(&raw, &at),
            _ => Ok(Value::Null),
        },
        Special::PropsOrArray => {
            let list = list_field(msg, 2);
            if !list.is_empty() {
                return list
                    .iter()
                    .map(|v| match v {
                        PValue::Message(m) => conv.message(m, depth + 1),
                        _ => Ok(Value::Null),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array);
            }
            schema_or_null(conv, msg, 1, depth)
        }
        Special::PropsOrBool => {
            if has(msg, 2) {
                return schema_or_null(conv, msg, 2, depth);
            }
            Ok(Value::Bool(matches!(
                msg.get_field_by_number(1).as_deref(),
                Some(PValue::Bool(true))
            )))
        }
        Special::PropsOrStringArray => {
            let list = list_field(msg, 2);
            if !list.is_empty() {
                return Ok(Value::Array(
                    list.iter()
                        .map(|v| match v {
                            PValue::String(s) => Value::String(s.clone()),
                            _ => Value::Null,
                        })
                        .collect(),
                ));
            }
            schema_or_null(conv, msg, 1, depth)
        }
    }
}

fn has(msg: &DynamicMessage, number: u32) -> bool {
    msg.has_field_by_number(number)
}

fn int(msg: &DynamicMessage, number: u32) -> i64 {
    match msg.get_field_by_number(number).as_deref() {
        Some(PValue::I64(v)) => *v,
        Some(PValue::I32(v)) => i64::from(*v),
        _ => 0,
    }
}

fn bytes(msg: &DynamicMessage, number: u32) -> Option<Vec<u8>> {
    if !has(msg, number) {
        return None;
    }
    match msg.get_field_by_number(number).as_deref() {
        Some(PValue::Bytes(b)) => Some(b.to_vec()),
        _ => None,
    }
}

fn list_field(msg: &DynamicMessage, number: u32) -> Vec<PValue> {
    match msg.get_field_by_number(number).as_deref() {
        Some(PValue::List(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn schema_or_null(
    conv: &Converter<'_>,
    msg: &DynamicMessage,
    number: u32,
    depth: usize,
) -> Result<Value, ProtobufError> {
    if !has(msg, number) {
        return Ok(Value::Null);
    }
    match msg.get_field_by_number(number).as_deref() {
        Some(PValue::Message(m)) => conv.message(m, depth + 1),
        _ => Ok(Value::Null),
    }
}

fn embedded_json(raw: &[u8], at: &dyn Fn() -> String) -> Result<Value, ProtobufError> {
    serde_json::from_slice(raw)
        .map_err(|e| ProtobufError::invalid(at(), format!("embedded bytes are not JSON: {e}")))
}

/// Base64 as Go's encoding/json writes `[]byte` (standard alphabet, padded).
pub(super) fn base64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `time.Time.UTC().Format(RFC3339)` (or RFC3339Micro when `micros` is given).
fn rfc3339(seconds: i64, micros: Option<u32>) -> Result<String, String> {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        // Time.MarshalJSON refuses these too.
        return Err("year outside of range [0,9999]".into());
    }
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    Ok(match micros {
        Some(us) => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{us:06}Z"),
        None => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
    })
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`); exact for the whole i64 range we can reach here.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Go's `time.Duration.String()`.
pub(super) fn go_duration(nanos: i64) -> String {
    let neg = nanos < 0;
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        // Sub-second durations use the largest unit that keeps an integer part.
        let (prec, unit) = match u {
            0 => return "0s".into(),
            1..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        let frac = fraction(&mut u, prec);
        out.push_str(&u.to_string());
        out.push_str(&frac);
        out.push_str(unit);
    } else {
        let frac = fraction(&mut u, 9);
        let (secs, mins, hours) = (u % 60, u / 60 % 60, u / 3600);
        if hours > 0 {
            out.push_str(&format!("{hours}h"));
        }
        if u >= 60 {
            out.push_str(&format!("{mins}m"));
        }
        out.push_str(&format!("{secs}{frac}s"));
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// Go's `fmtFrac`: splits off `prec` decimal digits of `v`, dropping trailing
/// zeros and the point itself when nothing is left.
fn fraction(v: &mut u64, prec: u32) -> String {
    let divisor = 10u64.pow(prec);
    let mut frac = *v % divisor;
    *v /= divisor;
    if frac == 0 {
        return String::new();
    }
    let mut digits = prec as usize;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    format!(".{frac:0digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_match_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (-90_000_000_000, "-1m30s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(go_duration(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn rfc3339_matches_go() {
        assert_eq!(rfc3339(0, None).as_deref(), Ok("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_767_323_105, None).as_deref(),
            Ok("2026-01-02T03:05:05Z")
        );
        assert_eq!(
            rfc3339(951_782_400, None).as_deref(),
            Ok("2000-02-29T00:00:00Z")
        );
        assert_eq!(
            rfc3339(-1, Some(5)).as_deref(),
            Ok("1969-12-31T23:59:59.000005Z")
        );
        assert_eq!(
            rfc3339(GO_ZERO_TIME, None).as_deref(),
            Ok("0001-01-01T00:00:00Z")
        );
        assert_eq!(
            rfc3339(253_402_300_799, None).as_deref(),
            Ok("9999-12-31T23:59:59Z")
        );
        assert!(rfc3339(253_402_300_800, None).is_err());
        assert!(rfc3339(i64::MIN, None).is_err());
        assert!(rfc3339(i64::MAX, None).is_err());
    }
}
