//! Label and field selectors, parsed as upstream's `labels.Parse` and `fields.ParseSelector` do.
//!
//! Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by
//! commas. Field selectors: `path=value`, `path==value`, `path!=value`, joined by commas; which
//! paths a resource supports is the caller's business (upstream answers 400 for others).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top_level(input)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|x| !vs.contains(x)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Split on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!("unbalanced ')' in {input:?}")));
                }
            }
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unbalanced '(' in {input:?}")));
    }
    out.push(&input[start..]);
    Ok(out)
}

fn check_key(key: &str, whole: &str) -> Result<String, SelectorError> {
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(SelectorError(format!(
            "invalid label key {key:?} in {whole:?}"
        )));
    }
    super::validation::label_key(key)
        .map_err(|e| SelectorError(format!("invalid label key {key:?}: {e}")))?;
    Ok(key.to_string())
}

fn check_value(v: &str, whole: &str) -> Result<String, SelectorError> {
    let v = v.trim();
    super::validation::label_value(v)
        .map_err(|e| SelectorError(format!("invalid label value {v:?} in {whole:?}: {e}")))?;
    Ok(v.to_string())
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("expected '(' values ')' in {whole:?}")))?;
    inner.split(',').map(|v| check_value(v, whole)).collect()
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(check_key(key, part)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(
            check_key(k, part)?,
            check_value(v, part)?,
        ));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(LabelRequirement::Equals(
            check_key(k, part)?,
            check_value(v, part)?,
        ));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(LabelRequirement::Equals(
            check_key(k, part)?,
            check_value(v, part)?,
        ));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    match words.next().map(str::trim_start) {
        None => Ok(LabelRequirement::Exists(check_key(key, part)?)),
        Some(rest) => {
            if let Some(set) = rest.strip_prefix("notin") {
                Ok(LabelRequirement::NotIn(
                    check_key(key, part)?,
                    parse_set(set, part)?,
                ))
            } else if let Some(set) = rest.strip_prefix("in") {
                Ok(LabelRequirement::In(
                    check_key(key, part)?,
                    parse_set(set, part)?,
                ))
            } else {
                Err(SelectorError(format!("unknown operator in {part:?}")))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRequirement {
    Equals(String, String),
    NotEquals(String, String),
}

impl FieldRequirement {
    pub fn field(&self) -> &str {
        match self {
            FieldRequirement::Equals(f, _) | FieldRequirement::NotEquals(f, _) => f,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in input.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                FieldRequirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                FieldRequirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                FieldRequirement::Equals(k.trim().into(), v.trim().into())
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector {part:?}: expected field=value or field!=value"
                )));
            };
            if req.field().is_empty() {
                return Err(SelectorError(format!("invalid field selector {part:?}")));
            }
            reqs.push(req);
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object matches, given a way to read a field's string value.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            FieldRequirement::Equals(f, v) => get(f).unwrap_or_default() == *v,
            FieldRequirement::NotEquals(f, v) => get(f).unwrap_or_default() != *v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_match_like_upstream() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("example.com/x", "1")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("missing notin (a)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("example.com/x=1", true),
            ("app in (api),tier", false),
        ];
        for (sel, want) in cases {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for sel in [
            "app in (a",
            "app in a",
            "a b c",
            "=x",
            "app=bad value!",
            "app)",
        ] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn field_selectors() {
        let sel = FieldSelector::parse("metadata.name=a,status.phase!=Failed").unwrap();
        let get = |f: &str| match f {
            "metadata.name" => Some("a".to_string()),
            "status.phase" => Some("Running".to_string()),
            _ => None,
        };
        assert!(sel.matches(get));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
