//! Resource quantities (`500m`, `1.5Gi`, `2e3`) as exact milli-units, enough for LimitRanger
//! and ResourceQuota arithmetic. Upstream's `resource.Quantity` is arbitrary precision; here
//! anything finer than a milli-unit rounds up, as upstream's `MilliValue()` does.

/// A quantity in thousandths of its unit (millicores for cpu, millibytes for memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Milli(pub i128);

impl Milli {
    /// Parse a Kubernetes quantity string; `None` when malformed. The grammar is upstream's
    /// (`resource.ParseQuantity`): one optional sign, digits with at most one `.`, then
    /// nothing, a binary suffix (`Ki`…`Ei`), a decimal suffix (`n u m k M G T P E`) or an
    /// exponent (`e`/`E`, optional sign, digits, |exponent| ≤ 2³¹−1). No whitespace. Values
    /// saturate at upstream's maximum (2⁶³−1 units) and round up (away from zero) to a milli.
    pub fn parse(s: &str) -> Option<Milli> {
        let b = s.as_bytes();
        let mut pos = 0;
        let negative = match b.first() {
            Some(b'-') => {
                pos = 1;
                true
            }
            Some(b'+') => {
                pos = 1;
                false
            }
            Some(_) => false,
            None => return None,
        };
        let int_start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let int = &s[int_start..pos];
        let mut frac = "";
        if pos < b.len() && b[pos] == b'.' {
            let f = pos + 1;
            pos = f;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            frac = &s[f..pos];
        } else if int.is_empty() {
            // Neither digits nor a point: "", "-", "--5", "aoeu".
            return None;
        }
        let suffix = &s[pos..];
        let (pow10, pow2): (i64, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            e if e.starts_with(['e', 'E']) => (exponent(&e[1..])?, 0),
            _ => return None,
        };
        // mantissa digits without leading zeros; value = mantissa × 2^pow2 × 10^e10 millis.
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        let mut e10 = pow10 + 3 - frac.len() as i64;
        if digits.is_empty() {
            return Some(Milli(0));
        }
        let max = i128::from(i64::MAX) * 1000;
        let saturated = Some(Milli(if negative { -max } else { max }));
        // At least 10^(len-1+e10) × 2^pow2 millis: past 10^22 it saturates anyway.
        if digits.len() as i64 + e10 > 23 {
            return saturated;
        }
        // Keep 20 significant digits (fits i128 with 2^60); anything dropped lies below a
        // milli here (the check above bounds len + e10) and only forces the round-up.
        let keep = digits.len().min(20);
        let sticky = digits[keep..].bytes().any(|c| c != b'0');
        e10 += (digits.len() - keep) as i64;
        let mantissa: i128 = digits[..keep].parse().ok()?;
        let scaled = mantissa.checked_mul(1i128 << pow2)?;
        let value = if e10 >= 0 {
            match 10i128
                .checked_pow(e10 as u32)
                .and_then(|p| scaled.checked_mul(p))
            {
                Some(v) => v,
                None => return saturated,
            }
        } else if e10 < -38 {
            // Far below a milli: rounds up to one.
            1
        } else {
            let d = 10i128.pow((-e10) as u32);
            scaled / d + i128::from(scaled % d != 0 || sticky)
        };
        let value = value.min(max);
        Some(Milli(if negative { -value } else { value }))
    }

    /// Upstream-like canonical text: whole units when exact, binary suffixes for whole
    /// powers of 1024 (memory), else millis.
    pub fn format(self) -> String {
        let v = self.0;
        if v % 1000 != 0 {
            return format!("{v}m");
        }
        let units = v / 1000;
        if units != 0 {
            for (suffix, shift) in [
                ("Ei", 60),
                ("Pi", 50),
                ("Ti", 40),
                ("Gi", 30),
                ("Mi", 20),
                ("Ki", 10),
            ] {
                let d = 1i128 << shift;
                if units % d == 0 && units.abs() >= d {
                    return format!("{}{suffix}", units / d);
                }
            }
        }
        units.to_string()
    }
}

/// An exponent: optional sign, then digits only, within ±(2³¹−1) as upstream's int32 scale.
fn exponent(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    (n.abs() <= i64::from(i32::MAX)).then_some(n)
}

impl std::ops::Add for Milli {
    type Output = Milli;
    fn add(self, o: Milli) -> Milli {
        Milli(self.0.saturating_add(o.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(Milli::parse("500m"), Some(Milli(500)));
        assert_eq!(Milli::parse("1"), Some(Milli(1000)));
        assert_eq!(Milli::parse("1.5"), Some(Milli(1500)));
        assert_eq!(Milli::parse("128Mi"), Some(Milli(128 * 1024 * 1024 * 1000)));
        assert_eq!(Milli::parse("1k"), Some(Milli(1_000_000)));
        assert_eq!(Milli::parse("2e3"), Some(Milli(2_000_000)));
        assert_eq!(Milli::parse("1n"), Some(Milli(1)));
        assert_eq!(Milli::parse("abc"), None);
        assert_eq!(Milli::parse("1Xi"), None);
        assert_eq!(Milli(500).format(), "500m");
        assert_eq!(Milli(2000).format(), "2");
        assert_eq!(Milli::parse("256Mi").unwrap().format(), "256Mi");
    }

    /// Upstream's `TestQuantityParse` table (apimachinery `quantity_test.go`), each value
    /// as millis (rounded up, as `MilliValue()`), and every entry again with `-` and `+`.
    #[test]
    fn upstream_parse_table() {
        const KI: i128 = 1024;
        let m = |units: i128| units * 1000;
        let table: &[(&str, i128)] = &[
            ("0", 0),
            ("0n", 0),
            ("0u", 0),
            ("0m", 0),
            ("0Ki", 0),
            ("0k", 0),
            ("0Mi", 0),
            ("0M", 0),
            ("0Gi", 0),
            ("0G", 0),
            ("0Ti", 0),
            ("0T", 0),
            ("1", m(1)),
            ("1Ki", m(KI)),
            ("8Ki", m(8 * KI)),
            ("7Mi", m(7 * KI.pow(2))),
            ("6Gi", m(6 * KI.pow(3))),
            ("5Ti", m(5 * KI.pow(4))),
            ("4Pi", m(4 * KI.pow(5))),
            ("3Ei", m(3 * KI.pow(6))),
            ("10Ti", m(10 * KI.pow(4))),
            ("100Ti", m(100 * KI.pow(4))),
            ("5n", 1),
            ("4u", 1),
            ("3m", 3),
            ("9", m(9)),
            ("8k", m(8_000)),
            ("50k", m(50_000)),
            ("7M", m(7_000_000)),
            ("6G", m(6 * 10i128.pow(9))),
            ("5T", m(5 * 10i128.pow(12))),
            ("40T", m(4 * 10i128.pow(13))),
            ("300T", m(3 * 10i128.pow(14))),
            ("2P", m(2 * 10i128.pow(15))),
            ("1E", m(10i128.pow(18))),
            ("1E-3", 1),
            ("1e3", m(1000)),
            ("1E6", m(10i128.pow(6))),
            ("1e9", m(10i128.pow(9))),
            ("1E12", m(10i128.pow(12))),
            ("1e15", m(10i128.pow(15))),
            ("1E18", m(10i128.pow(18))),
            ("1e14", m(10i128.pow(14))),
            ("1e13", m(10i128.pow(13))),
            ("100.035k", m(100_035)),
            ("0.001", 1),
            ("0.0005k", 500),
            ("0.005", 5),
            ("0.05", 50),
            ("0.5", 500),
            ("0.00050k", 500),
            ("0.00500", 5),
            ("0.05000", 50),
            ("0.50000", 500),
            ("0.5e0", 500),
            ("0.5e-1", 50),
            ("0.5e-2", 5),
            ("10.035M", m(10_035_000)),
            ("1.2e3", m(1200)),
            ("1.3E+6", m(1_300_000)),
            ("1.40e9", m(1_400_000_000)),
            ("1.53E12", m(153 * 10i128.pow(10))),
            ("1.6e15", m(16 * 10i128.pow(14))),
            ("1.7E18", m(17 * 10i128.pow(17))),
            ("9.01", 9010),
            ("8.1k", m(8100)),
            ("7.123456M", m(7_123_456)),
            ("6.987654321G", m(6_987_654_321)),
            ("5.444T", m(5444 * 10i128.pow(9))),
            ("40.1T", m(401 * 10i128.pow(11))),
            ("300.2T", m(3002 * 10i128.pow(11))),
            ("2.5P", m(25 * 10i128.pow(14))),
            ("1.01E", m(101 * 10i128.pow(16))),
            ("3.001n", 1),
            ("1.1E-9", 1),
            ("0.0000000001", 1),
            ("0.0000000005", 1),
            ("0.00000000050", 1),
            ("0.5e-9", 1),
            ("0.9n", 1),
            ("0.00000012345", 1),
            ("0.00000012354", 1),
            ("9Ei", m(i64::MAX as i128)),
            ("9223372036854775807Ki", m(i64::MAX as i128)),
            ("12E", m(i64::MAX as i128)),
            ("100.035Ki", 102_435_840),
            ("0.5Mi", m(512 * KI)),
            ("0.05Gi", 53_687_091_200),
            ("0.025Ti", 27_487_790_694_400),
            ("0.000000000001Ki", 1),
            (".001", 1),
            (".0001k", 100),
            ("1.", m(1)),
            ("1.G", m(10i128.pow(9))),
        ];
        for (input, want) in table {
            assert_eq!(Milli::parse(input), Some(Milli(*want)), "{input}");
            assert_eq!(
                Milli::parse(&format!("-{input}")),
                Some(Milli(-want)),
                "-{input}"
            );
            assert_eq!(
                Milli::parse(&format!("+{input}")),
                Some(Milli(*want)),
                "+{input}"
            );
        }
    }

    /// Upstream's invalid inputs, plus the doubled signs upstream's grammar never allows.
    #[test]
    fn upstream_invalid_table() {
        for input in [
            "",
            "1.1.M",
            "1+1.0M",
            "0.1mi",
            "0.1am",
            "aoeu",
            ".5i",
            "1i",
            "-3.01i",
            "-3.01e-",
            "1e4294967297",
            " 1",
            "1 ",
            "--5",
            "++5",
            "+-5",
            "-",
            "+",
            "1e",
            "1e+",
            "1Ki5",
            "1E2147483648",
        ] {
            assert_eq!(Milli::parse(input), None, "{input:?} parsed");
        }
        // The exponent bounds: int32 accepted (and saturating), past it refused.
        assert_eq!(
            Milli::parse("1E2147483647"),
            Some(Milli(i64::MAX as i128 * 1000))
        );
        assert_eq!(Milli::parse("1E-2147483647"), Some(Milli(1)));
        assert_eq!(Milli::parse("0E2147483647"), Some(Milli(0)));
    }
}
