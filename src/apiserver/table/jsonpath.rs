//! The subset of client-go JSONPath (`k8s.io/client-go/util/jsonpath`)
//! that CRD `additionalPrinterColumns` use, with upstream's quirks.
//!
//! Supported: `.field` (backslash escapes, e.g. `.metadata.labels.app\.kubernetes\.io/name`),
//! `.*` on objects, `[n]`, `[-n]`, `[a:b]`, `[a:b:step]`, `[*]`,
//! `['key']` (which upstream re-parses as `.key`, so dots inside split it),
//! filters `[?(@.type=="Ready")]` with `== != < > <= >=` against quoted
//! strings, integers, floats, booleans or another `@` path, and existence
//! filters `[?(@.field)]`. A leading `$` or `@` is accepted.
//!
//! Not supported (parse error, as for any path upstream rejects): recursive
//! descent `..`, unions `[a,b]`, and template text outside the path.
//!
//! Invariants: evaluation follows upstream with `AllowMissingKeys(true)`:
//! missing fields yield no result rather than an error; type mismatches
//! (indexing a non-list, out-of-range indexes, comparing incompatible
//! types) are errors. Callers treat both as "no value".

use serde_json::Value;

use super::TableError;

/// A parsed JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Wildcard,
    Slice(Slice),
    Filter(Box<Filter>),
}

/// `[start:end:step]` with upstream's "derived end" for plain `[n]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slice {
    start: Option<i64>,
    end: Option<i64>,
    /// `[n]` means `[n:n+1]`; a derived end of 0 (from `[-1]`) wraps.
    end_derived: bool,
    step: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: JsonPath,
    /// `None` for an existence filter.
    comparison: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    /// Parsed but rejected at evaluation, as upstream does (e.g. `=`).
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(JsonPath),
    Literal(Value),
}

/// Evaluation failed (upstream's error cases, noted where raised); callers
/// turn it into an empty cell, so no detail is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EvalError;

fn invalid(path: &str, reason: impl Into<String>) -> TableError {
    TableError::InvalidJsonPath {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// client-go `isTerminator`: characters that end a field name.
fn is_terminator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}')
}

impl JsonPath {
    /// Parses a path such as `.status.conditions[?(@.type=="Ready")].status`.
    pub fn parse(path: &str) -> Result<JsonPath, TableError> {
        let mut steps = Vec::new();
        parse_into(path, path, &mut steps)?;
        Ok(JsonPath { steps })
    }

    /// All values the path selects in `root`.
    pub(super) fn find<'a>(&self, root: &'a Value) -> Result<Vec<&'a Value>, EvalError> {
        self.steps
            .iter()
            .try_fold(vec![root], |input, step| step.eval(input))
    }

    /// The first selected value, as CRD printer columns use; `None` when
    /// nothing matched or evaluation failed.
    pub fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.find(root).ok()?.into_iter().next()
    }
}

fn parse_into(full: &str, text: &str, steps: &mut Vec<Step>) -> Result<(), TableError> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            c if c.is_whitespace() => i += 1,
            '$' | '@' if steps.is_empty() => i += 1,
            '.' => {
                if chars.get(i + 1) == Some(&'.') {
                    return Err(invalid(full, "recursive descent is not supported"));
                }
                i += 1;
                let mut field = String::new();
                while i < chars.len() && !is_terminator(chars[i]) {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if let Some(&c) = chars.get(i) {
                        field.push(c);
                    }
                    i += 1;
                }
                match field.as_str() {
                    // `.` alone (e.g. the path ".") selects the input.
                    "" => {}
                    "*" => steps.push(Step::Wildcard),
                    _ => steps.push(Step::Field(field)),
                }
            }
            '[' if chars[i..].starts_with(&['[', '?', '(']) => {
                let (filter, next) = parse_filter(full, &chars, i + 3)?;
                steps.push(Step::Filter(Box::new(filter)));
                i = next;
            }
            '[' => {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or_else(|| invalid(full, "unterminated array"))?;
                let inner: String = chars[i + 1..i + close].iter().collect();
                parse_bracket(full, &inner, steps)?;
                i += close + 1;
            }
            c => {
                return Err(invalid(
                    full,
                    format!("unrecognized character in action: {c:?}"),
                ))
            }
        }
    }
    Ok(())
}

/// The inside of `[...]` that is not a filter.
fn parse_bracket(full: &str, inner: &str, steps: &mut Vec<Step>) -> Result<(), TableError> {
    let inner = if inner == "*" { ":" } else { inner };
    if inner.contains(',') {
        return Err(invalid(full, "unions are not supported"));
    }
    if let Some(key) = inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .filter(|k| !k.contains('\''))
    {
        // Upstream re-parses ['key'] as ".key".
        return parse_into(full, &format!(".{key}"), steps);
    }
    let parts: Vec<&str> = inner.split(':').collect();
    let number = |s: &str| -> Result<Option<i64>, TableError> {
        let ok = {
            let digits = s.strip_prefix('-').unwrap_or(s);
            digits.chars().all(|c| c.is_ascii_digit())
        };
        if !ok {
            return Err(invalid(full, format!("invalid array index {inner}")));
        }
        if s.is_empty() || s == "-" {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| invalid(full, format!("invalid array index {inner}")))
    };
    let slice = match parts.as_slice() {
        [index] => {
            let start = number(index)?;
            Slice {
                start,
                // Upstream derives end = start + 1 (0 + 1 when start is empty).
                end: Some(start.unwrap_or(0) + 1),
                end_derived: true,
                step: None,
            }
        }
        [start, end] => Slice {
            start: number(start)?,
            end: number(end)?,
            end_derived: false,
            step: None,
        },
        [start, end, step] => Slice {
            start: number(start)?,
            end: number(end)?,
            end_derived: false,
            step: number(step)?,
        },
        _ => return Err(invalid(full, format!("invalid array index {inner}"))),
    };
    steps.push(Step::Slice(slice));
    Ok(())
}

/// Parses `[?(...)]` starting just after `[?(`; returns the index after `]`.
fn parse_filter(full: &str, chars: &[char], start: usize) -> Result<(Filter, usize), TableError> {
    // Find the closing ')' outside a quoted string, as upstream does.
    let mut quote: Option<char> = None;
    let mut i = start;
    let close = loop {
        let Some(&c) = chars.get(i) else {
            return Err(invalid(full, "unterminated filter"));
        };
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q && chars[i - 1] != '\\' => quote = None,
            (')', None) => break i,
            _ => {}
        }
        i += 1;
    };
    if chars.get(close + 1) != Some(&']') {
        return Err(invalid(full, "unclosed array expect ]"));
    }
    let text: String = chars[start..close].iter().collect();
    // Upstream: ^([^!<>=]+)([!<>=]+)(.+?)$
    let filter = match text.find(['!', '<', '>', '=']) {
        Some(op_at) if op_at > 0 => {
            let rest = &text[op_at..];
            let op_len = rest
                .find(|c: char| !matches!(c, '!' | '<' | '>' | '='))
                .unwrap_or(rest.len());
            let op = match &rest[..op_len] {
                "==" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                ">" => Op::Gt,
                "<=" => Op::Le,
                ">=" => Op::Ge,
                _ => Op::Unknown,
            };
            let right = rest[op_len..].trim();
            if right.is_empty() {
                return Err(invalid(full, "missing filter operand"));
            }
            Filter {
                left: JsonPath::parse(&text[..op_at])?,
                comparison: Some((op, parse_operand(full, right)?)),
            }
        }
        _ => Filter {
            left: JsonPath::parse(&text)?,
            comparison: None,
        },
    };
    Ok((filter, close + 2))
}

fn parse_operand(full: &str, text: &str) -> Result<Operand, TableError> {
    let quoted = |q: char| text.strip_prefix(q).and_then(|s| s.strip_suffix(q));
    if let Some(s) = quoted('"').or_else(|| quoted('\'')) {
        return Ok(Operand::Literal(Value::from(s.replace("\\", ""))));
    }
    match text {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Operand::Literal(Value::from(i)));
    }
    if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        if let Ok(f) = text.parse::<f64>() {
            return Ok(Operand::Literal(Value::from(f)));
        }
    }
    if text.starts_with(['@', '$', '.']) {
        return Ok(Operand::Path(JsonPath::parse(text)?));
    }
    Err(invalid(full, format!("unrecognized filter operand {text}")))
}

impl Step {
    fn eval<'a>(&self, input: Vec<&'a Value>) -> Result<Vec<&'a Value>, EvalError> {
        match self {
            Step::Field(name) => Ok(input
                .into_iter()
                .filter_map(|v| v.as_object()?.get(name))
                .collect()),
            Step::Wildcard => Ok(input
                .into_iter()
                .filter_map(Value::as_object)
                .flat_map(|m| m.values())
                .collect()),
            Step::Slice(slice) => {
                let mut out = Vec::new();
                for v in input {
                    if v.is_null() {
                        continue;
                    }
                    // Upstream: "... is not array or slice".
                    let list = v.as_array().ok_or(EvalError)?;
                    match slice.select(list)? {
                        Some(selected) => out.extend(selected),
                        // Upstream returns early on an empty selection.
                        None => return Ok(out),
                    }
                }
                Ok(out)
            }
            Step::Filter(filter) => {
                let mut out = Vec::new();
                for v in input {
                    // Upstream: "... is not array or slice and cannot be filtered".
                    let list = v.as_array().ok_or(EvalError)?;
                    for item in list {
                        if filter.matches(item)? {
                            out.push(item);
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

impl Slice {
    /// `None` when the slice selects nothing (upstream's early return).
    fn select<'a>(&self, list: &'a [Value]) -> Result<Option<Vec<&'a Value>>, EvalError> {
        let len = list.len() as i64;
        let mut start = self.start.unwrap_or(0);
        if start < 0 {
            start += len;
        }
        let mut end = self.end.unwrap_or(len);
        if end < 0 || (end == 0 && self.end_derived) {
            end += len;
        }
        if start == end {
            return Ok(None);
        }
        // Upstream: "array index out of bounds" / "starting index ... is
        // greater than ending index".
        if start >= len || start < 0 || end > len || end < 0 || start > end {
            return Err(EvalError);
        }
        let step = match self.step {
            Some(s) if s <= 0 => return Err(EvalError),
            Some(s) => s as usize,
            None => 1,
        };
        Ok(Some(
            list[start as usize..end as usize]
                .iter()
                .step_by(step)
                .collect(),
        ))
    }
}

impl Filter {
    fn matches(&self, item: &Value) -> Result<bool, EvalError> {
        let lefts = self.left.find(item);
        let Some((op, operand)) = &self.comparison else {
            return Ok(lefts.is_ok_and(|l| !l.is_empty()));
        };
        let lefts = lefts?;
        let left = match lefts.as_slice() {
            [] => return Ok(false),
            [one] => *one,
            // Upstream: "can only compare one element at a time".
            _ => return Err(EvalError),
        };
        let right = match operand {
            Operand::Literal(v) => v,
            Operand::Path(p) => match p.find(item)?.as_slice() {
                [] => return Ok(false),
                [one] => *one,
                _ => return Err(EvalError),
            },
        };
        compare(*op, left, right)
    }
}

/// text/template's comparison rules: same basic kind only (integers and
/// floats are different kinds), ordering only for numbers and strings.
fn compare(op: Op, left: &Value, right: &Value) -> Result<bool, EvalError> {
    use std::cmp::Ordering;
    if op == Op::Unknown {
        return Err(EvalError);
    }
    let ordering: Option<Ordering> = match (left, right) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ if a.is_f64() && b.is_f64() => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(x, y)| x.partial_cmp(&y)),
            _ => return Err(EvalError),
        },
        (Value::Bool(a), Value::Bool(b)) => {
            return match op {
                Op::Eq => Ok(a == b),
                Op::Ne => Ok(a != b),
                _ => Err(EvalError),
            }
        }
        _ => return Err(EvalError),
    };
    let Some(ord) = ordering else {
        // NaN cannot come from JSON; treat as unequal.
        return Ok(op == Op::Ne);
    };
    Ok(match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Gt => ord == Ordering::Greater,
        Op::Le => ord != Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Unknown => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj() -> Value {
        json!({
            "metadata": {"name": "db", "labels": {"app": "pg", "app.kubernetes.io/name": "postgres"}},
            "spec": {"replicas": 3, "ratio": 1.5, "ports": [{"port": 5432, "name": "pg"}, {"port": 9187, "name": "metrics"}]},
            "status": {"conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "Starting", "observedGeneration": 2}
            ], "nodes": ["a", "b", "c", "d"], "nil": null}
        })
    }

    fn first(path: &str) -> Option<Value> {
        JsonPath::parse(path).unwrap().first(&obj()).cloned()
    }

    #[test]
    fn fields_indexes_and_slices() {
        assert_eq!(first(".spec.replicas"), Some(json!(3)));
        assert_eq!(first("$.metadata.name"), Some(json!("db")));
        assert_eq!(first(".metadata.labels.app"), Some(json!("pg")));
        assert_eq!(
            first(".metadata.labels.app\\.kubernetes\\.io/name"),
            Some(json!("postgres"))
        );
        assert_eq!(first(".spec.ports[1].name"), Some(json!("metrics")));
        assert_eq!(first(".spec.ports[-1].port"), Some(json!(9187)));
        assert_eq!(first(".spec.ports[*].port"), Some(json!(5432)));
        assert_eq!(first(".status.nodes[1:3]"), Some(json!("b")));
        let all = JsonPath::parse(".status.nodes[::2]").unwrap();
        let found: Vec<Value> = all.find(&obj()).unwrap().into_iter().cloned().collect();
        assert_eq!(found, vec![json!("a"), json!("c")]);
        assert_eq!(first(".status.nil"), Some(Value::Null));
        assert_eq!(first("."), Some(obj()));
    }

    #[test]
    fn filters() {
        assert_eq!(
            first(".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("False"))
        );
        assert_eq!(
            first(".status.conditions[?(@.type == 'Ready')].reason"),
            Some(json!("Starting"))
        );
        assert_eq!(
            first(".spec.ports[?(@.port>6000)].name"),
            Some(json!("metrics"))
        );
        assert_eq!(
            first(".spec.ports[?(@.port<=5432)].name"),
            Some(json!("pg"))
        );
        assert_eq!(
            first(".status.conditions[?(@.reason)].type"),
            Some(json!("Ready"))
        );
        assert_eq!(
            first(".status.conditions[?(@.type!=\"Ready\")].type"),
            Some(json!("Initialized"))
        );
        assert_eq!(
            first(".status.conditions[?(@.type==\"Nope\")].status"),
            None
        );
    }

    #[test]
    fn missing_and_mistyped_yield_nothing() {
        assert_eq!(first(".spec.missing"), None);
        assert_eq!(first(".spec.missing.deeper[0]"), None);
        // Out of range and indexing a non-list are errors upstream.
        assert!(JsonPath::parse(".spec.ports[5]")
            .unwrap()
            .find(&obj())
            .is_err());
        assert!(JsonPath::parse(".spec.replicas[0]")
            .unwrap()
            .find(&obj())
            .is_err());
        assert_eq!(first(".spec.replicas[0]"), None);
        // Comparing an integer with a string is an error, not a mismatch.
        let p = JsonPath::parse(".spec.ports[?(@.port==\"5432\")].name").unwrap();
        assert!(p.find(&obj()).is_err());
        // Empty list with [*] is simply empty.
        assert_eq!(
            JsonPath::parse(".a[*]")
                .unwrap()
                .find(&json!({"a": []}))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn dict_key_is_reparsed_as_a_dotted_path_like_upstream() {
        assert_eq!(first(".metadata.labels['app']"), Some(json!("pg")));
        // Upstream splits on the dot inside the quotes, so this finds nothing.
        assert_eq!(first(".metadata.labels['app.kubernetes.io/name']"), None);
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "..spec",
            ".a[",
            ".a[x]",
            ".a[1,2]",
            ".a[?(@.b==\"c\")",
            "spec}",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
