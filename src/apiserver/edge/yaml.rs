//! YAML request bodies (`application/yaml`, `application/apply-patch+yaml`) decoded into JSON
//! values at a cost linear in the body, whatever it holds.
//!
//! Two things make a small YAML text expensive, and both are bounded before or while parsing:
//! * flow nesting (`[[[[...`): libyaml's scanner walks its stack of possible simple keys, one
//!   per open flow collection, for every token — 200 KB of `[` cost 20 s of CPU. So
//!   [`flow_depth`] bounds the nesting in one pass first, and deeper texts are refused;
//! * aliases (`*a` repeating an anchored value, the "billion laughs"): serde_yaml_ng limits
//!   alias *jumps* to 100 per event, but one jump can repeat a large value, so 30 KB can expand
//!   to gigabytes. [`decode`] builds the value itself and charges every node and every byte of
//!   every scalar against a budget proportional to the body, as upstream's go-yaml limits the
//!   alias expansion ratio.
//!
//! Nesting deeper than 128 is refused by serde_yaml_ng itself (its recursion limit).

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Deepest flow nesting accepted (the same limit as the decoded document's depth).
pub const MAX_FLOW_DEPTH: usize = crate::apiserver::merge::MAX_DEPTH;

/// How much the decoded value may exceed the text: scalars and nodes may be repeated through
/// aliases up to this many times the body's size in total (plus a small allowance).
const EXPANSION: usize = 4;
const ALLOWANCE: usize = 64 * 1024;

/// An upper bound of the flow nesting (`[` and `{`) of a YAML text, in one linear pass.
///
/// Every bracket counts, inside quoted scalars and block scalars too: telling those apart
/// needs a full YAML lexer, and any disagreement with libyaml's would let a hostile body
/// through. Only lines whose first non-blank character is `#` are skipped: whatever they are
/// (a comment, or a scalar's continuation), their brackets are never flow indicators. A text
/// whose brackets nest deeper than the limit is refused, even if some are inside strings;
/// such documents can still be sent as JSON.
pub fn flow_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for line in bytes.split(|&b| b == b'\n') {
        if line
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            .is_some_and(|&b| b == b'#')
        {
            continue;
        }
        for &b in line {
            match b {
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    max
}

/// Why a YAML body was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the YAML request body nests '[' and '{{' deeper than {MAX_FLOW_DEPTH} levels (counting those inside strings); send it as JSON")]
    TooDeep,
    #[error("the request body is not valid YAML: {0}")]
    Invalid(String),
}

/// Decodes one YAML document into a JSON value, within the nesting and expansion bounds.
pub fn decode(bytes: &[u8]) -> Result<Value, Error> {
    if flow_depth(bytes) > MAX_FLOW_DEPTH {
        return Err(Error::TooDeep);
    }
    let budget = Cell::new(bytes.len().saturating_mul(EXPANSION) + ALLOWANCE);
    let de = serde_yaml_ng::Deserializer::from_slice(bytes);
    Bounded { budget: &budget }
        .deserialize(de)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Builds a `serde_json::Value` as serde_json's own visitor does, paying for what it builds.
#[derive(Clone, Copy)]
struct Bounded<'b> {
    budget: &'b Cell<usize>,
}

impl Bounded<'_> {
    fn charge<E: serde::de::Error>(&self, cost: usize) -> Result<(), E> {
        match self.budget.get().checked_sub(cost.saturating_add(1)) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "the document expands (through aliases) far beyond the size of the body",
            )),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(8)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(8)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(8)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.charge(key.len())?;
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn decodes_like_serde_yaml() {
        let text = "a: 1\nb: [x, 2.5, true, null]\nc: {d: -3}\ne: 'it''s'\n";
        let want: Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(decode(text.as_bytes()).unwrap(), want);
        let anchors = "base: &b {x: 1}\ncopy: *b\n";
        assert_eq!(
            decode(anchors.as_bytes()).unwrap(),
            serde_json::json!({"base": {"x": 1}, "copy": {"x": 1}})
        );
        assert!(matches!(decode(b"a: [unclosed"), Err(Error::Invalid(_))));
        assert!(decode(b"a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn flow_depth_is_an_upper_bound() {
        assert_eq!(flow_depth(b"a: [1, {b: [2]}]\nc: [x]"), 3);
        assert_eq!(flow_depth(b"a: '[[['\n  # [[[[[[\nb: 1"), 3);
        assert_eq!(flow_depth(b"]]]]a: [b]"), 1);
    }

    /// The attack: 200 KB of nested flow collections, and nesting without brackets (block
    /// mappings by indentation, `- - -` sequences), are refused in linear time.
    #[test]
    fn nested_yaml_is_cheap() {
        for body in [
            "a: ".to_string() + &"[".repeat(200_000),
            "a: ".to_string() + &"{a: ".repeat(50_000),
            (0..600)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>(),
            "- ".repeat(100_000),
        ] {
            let started = Instant::now();
            assert!(decode(body.as_bytes()).is_err(), "{}", &body[..20]);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?} for {}",
                started.elapsed(),
                &body[..20]
            );
        }
    }

    /// Billion laughs, deep (10 × 10 × ...) and wide (one big value repeated many times).
    #[test]
    fn aliases_cannot_expand_without_bound() {
        let mut deep = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            deep.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let wide = format!(
            "a: &a [{}]\nb: &b [{}]\nc: [{}]\n",
            vec!["xxxxxxxx"; 5000].join(", "),
            vec!["*a"; 5000].join(", "),
            vec!["*b"; 100].join(", ")
        );
        let big_string = format!(
            "a: &a '{}'\nb: [{}]\n",
            "y".repeat(100_000),
            vec!["*a"; 1000].join(", ")
        );
        for body in [deep, wide, big_string] {
            let started = Instant::now();
            let err = decode(body.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{err}");
            assert!(started.elapsed() < Duration::from_secs(1));
        }
    }
}
