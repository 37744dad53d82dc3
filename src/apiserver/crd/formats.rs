//! String formats checked on custom objects (upstream `apiserver/validation/formats.go` plus
//! the kube-openapi `strfmt` registry it delegates to).
//!
//! Like upstream, formats are only checked on values of `type: string` (or no type); a format
//! upstream does not know is ignored rather than rejected, and integer/number formats
//! (`int32`, `int64`, `float`, `double`) are accepted without range checks, because
//! kube-openapi's format validator only applies to strings. Format names are normalised by
//! dropping `-`, as go-openapi does (`date-time` == `datetime`).
//!
//! Approximations (documented, not silent): `email` and `uri` use a shape check instead of Go's
//! `net/mail` and `net/url` parsers, and `duration` accepts Go `time.ParseDuration` syntax.

use regex::Regex;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

/// One of the literal patterns below (never input). A pattern that did not compile would
/// match nothing, so values of its format are refused rather than the server panicking; the
/// `formats` test exercises every one of them, so a typo fails the tests, not a request.
struct Pattern(Option<Regex>);

impl Pattern {
    fn is_match(&self, value: &str) -> bool {
        self.0.as_ref().is_some_and(|r| r.is_match(value))
    }
}

fn re(pattern: &str) -> Pattern {
    Pattern(Regex::new(pattern).ok())
}

static UUID: LazyLock<Pattern> =
    LazyLock::new(|| re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"));
static UUID3: LazyLock<Pattern> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
});
static UUID4: LazyLock<Pattern> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$")
});
static UUID5: LazyLock<Pattern> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$")
});
static HOSTNAME: LazyLock<Pattern> = LazyLock::new(|| {
    re(
        r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$",
    )
});
static EMAIL: LazyLock<Pattern> = LazyLock::new(|| re(r"^[^@\s<>]+@[^@\s<>]+$"));
static URI: LazyLock<Pattern> = LazyLock::new(|| re(r"^([a-zA-Z][a-zA-Z0-9+.\-]*:\S+|/\S*)$"));
static SSN: LazyLock<Pattern> = LazyLock::new(|| re(r"^\d{3}[- ]?\d{2}[- ]?\d{4}$"));
static HEXCOLOR: LazyLock<Pattern> = LazyLock::new(|| re(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"));
static RGBCOLOR: LazyLock<Pattern> = LazyLock::new(|| {
    let c = r"\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*";
    re(&format!(r"^rgb\({c},{c},{c}\)$"))
});
static BSON_OBJECT_ID: LazyLock<Pattern> = LazyLock::new(|| re(r"^[0-9a-fA-F]{24}$"));
static DURATION: LazyLock<Pattern> = LazyLock::new(|| {
    re(
        r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+|\d+\s*(ns|us|ms|s|m|h|d|w|nanoseconds?|microseconds?|milliseconds?|seconds?|minutes?|hours?|days?|weeks?))$",
    )
});
static QUANTITY: LazyLock<Pattern> = LazyLock::new(|| {
    re(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
});

/// Whether `value` satisfies `format`. Unknown formats are accepted (upstream strips them).
pub(super) fn conforms(format: &str, value: &str) -> bool {
    match format.replace('-', "").as_str() {
        "datetime" => is_date_time(value),
        "date" => value.len() == 10 && value.parse::<jiff::civil::Date>().is_ok(),
        "byte" => is_base64(value),
        "uuid" => UUID.is_match(value),
        "uuid3" => UUID3.is_match(value),
        "uuid4" => UUID4.is_match(value),
        "uuid5" => UUID5.is_match(value),
        "ipv4" => value.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => value.contains(':') && value.parse::<Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(value),
        "mac" => is_mac(value),
        "hostname" => value.len() <= 255 && HOSTNAME.is_match(value),
        "email" => EMAIL.is_match(value),
        "uri" => URI.is_match(value),
        "ssn" => SSN.is_match(value),
        "hexcolor" => HEXCOLOR.is_match(value),
        "rgbcolor" => RGBCOLOR.is_match(value),
        "bsonobjectid" => BSON_OBJECT_ID.is_match(value),
        "duration" => DURATION.is_match(value),
        "quantity" => QUANTITY.is_match(value),
        "isbn" => is_isbn10(value) || is_isbn13(value),
        "isbn10" => is_isbn10(value),
        "isbn13" => is_isbn13(value),
        "creditcard" => is_credit_card(value),
        "k8sshortname" => value.len() <= 63 && is_lower_label(value),
        "k8slongname" => value.len() <= 253 && value.split('.').all(is_lower_label),
        // "password" and anything unknown: no constraint.
        _ => true,
    }
}

fn is_date_time(v: &str) -> bool {
    // RFC 3339 with an offset, or the ISO 8601 local forms strfmt also accepts.
    v.parse::<jiff::Timestamp>().is_ok()
        || (v.len() >= 16 && v.parse::<jiff::civil::DateTime>().is_ok())
}

fn is_base64(v: &str) -> bool {
    let b = v.as_bytes();
    if !b.len().is_multiple_of(4) {
        return false;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    pad <= 2
        && b[..b.len() - pad]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

fn is_cidr(v: &str) -> bool {
    let Some((ip, bits)) = v.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn is_mac(v: &str) -> bool {
    let hex_groups = |sep: char, width: usize| {
        let parts: Vec<&str> = v.split(sep).collect();
        matches!(parts.len() * width / 2, 6 | 8 | 20)
            && parts.len() > 1
            && parts
                .iter()
                .all(|p| p.len() == width && p.bytes().all(|c| c.is_ascii_hexdigit()))
    };
    hex_groups(':', 2) || hex_groups('-', 2) || hex_groups('.', 4)
}

fn is_lower_label(v: &str) -> bool {
    let b = v.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    matches!((b.first(), b.last()), (Some(f), Some(l)) if alnum(f) && alnum(l))
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

fn isbn_digits(v: &str) -> Vec<char> {
    v.chars().filter(|c| *c != '-' && *c != ' ').collect()
}

fn is_isbn10(v: &str) -> bool {
    let d = isbn_digits(v);
    if d.len() != 10 {
        return false;
    }
    let mut sum = 0;
    for (i, c) in d.iter().enumerate() {
        let n = match (i, c) {
            (9, 'X') => 10,
            (_, c) => match c.to_digit(10) {
                Some(n) => n,
                None => return false,
            },
        };
        sum += n * (10 - i as u32);
    }
    sum % 11 == 0
}

fn is_isbn13(v: &str) -> bool {
    let d = isbn_digits(v);
    if d.len() != 13 {
        return false;
    }
    let mut sum = 0;
    for (i, c) in d.iter().enumerate() {
        let Some(n) = c.to_digit(10) else {
            return false;
        };
        sum += if i % 2 == 0 { n } else { 3 * n };
    }
    sum.is_multiple_of(10)
}

fn is_credit_card(v: &str) -> bool {
    let digits: Vec<u32> = v.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(12..=19).contains(&digits.len()) {
        return false;
    }
    // Luhn checksum.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::conforms;

    #[test]
    fn formats() {
        let cases = [
            ("date-time", "2024-01-02T03:04:05Z", true),
            ("date-time", "2024-01-02T03:04:05.123+01:00", true),
            ("date-time", "yesterday", false),
            ("date", "2024-02-29", true),
            ("date", "2023-02-29", false),
            ("byte", "aGVsbG8=", true),
            ("byte", "aGVsbG8", false),
            ("uuid", "123e4567-e89b-12d3-a456-426614174000", true),
            ("uuid", "nope", false),
            ("ipv4", "10.0.0.1", true),
            ("ipv4", "::1", false),
            ("ipv6", "::1", true),
            ("cidr", "10.0.0.0/8", true),
            ("cidr", "10.0.0.0/33", false),
            ("mac", "01:23:45:67:89:ab", true),
            ("mac", "01:23:45", false),
            ("hostname", "example.com", true),
            ("hostname", "-bad-", false),
            ("email", "a@b.c", true),
            ("email", "a b", false),
            ("quantity", "10Gi", true),
            ("quantity", "1.5", true),
            ("quantity", "ten", false),
            ("duration", "1h30m", true),
            ("duration", "3 days", true),
            ("duration", "soon", false),
            ("isbn13", "978-0321751041", true),
            ("isbn10", "0321751043", true),
            ("isbn10", "0321751044", false),
            ("creditcard", "4111 1111 1111 1111", true),
            ("creditcard", "4111 1111 1111 1112", false),
            ("k8s-short-name", "my-name", true),
            ("k8s-short-name", "My-name", false),
            ("password", "anything", true),
            ("made-up-format", "anything", true),
        ];
        for (format, value, ok) in cases {
            assert_eq!(conforms(format, value), ok, "{format} {value}");
        }
    }
}
