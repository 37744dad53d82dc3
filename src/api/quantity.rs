//! Resource quantities (`500m`, `1.5Gi`, `2e3`) as exact milli-units, enough for LimitRanger
//! and ResourceQuota arithmetic. Upstream's `resource.Quantity` is arbitrary precision; here
//! anything finer than a milli-unit rounds up, as upstream's `MilliValue()` does.

/// A quantity in thousandths of its unit (millicores for cpu, millibytes for memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Milli(pub i128);

impl Milli {
    /// Parse a Kubernetes quantity string; `None` when malformed.
    pub fn parse(s: &str) -> Option<Milli> {
        let s = s.trim();
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(end);
        if num.is_empty() {
            return None;
        }
        let negative = num.starts_with('-');
        let num = num.trim_start_matches(['+', '-']);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let digits = format!("{int}{frac}");
        if !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() > 30 {
            return None;
        }
        let mantissa: i128 = digits.parse().ok()?;
        // value = mantissa * 10^(-frac.len()) * multiplier; we want value * 1000.
        let (pow10, pow2): (i32, u32) = match suffix {
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
            e if e.starts_with(['e', 'E']) => {
                (e[1..].parse::<i32>().ok().filter(|x| x.abs() <= 18)?, 0)
            }
            _ => return None,
        };
        let exp = pow10 + 3 - frac.len() as i32;
        let scaled = mantissa.checked_mul(1i128.checked_shl(pow2)?)?;
        let value = if exp >= 0 {
            scaled.checked_mul(10i128.checked_pow(exp as u32)?)?
        } else {
            let d = 10i128.checked_pow((-exp) as u32)?;
            (scaled + d - 1) / d
        };
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
}
