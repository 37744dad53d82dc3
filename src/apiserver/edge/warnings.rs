//! `Warning` response headers (`299 - "text"`), recorded as upstream's
//! `k8s.io/apiserver/pkg/endpoints/filters/warning.go` does.
//!
//! Invariants (upstream's recorder):
//! - identical texts are sent once;
//! - while the texts total at most 4 KiB (4,096 characters), each is sent whole;
//! - the warning that would cross that total switches to truncation: everything recorded so
//!   far is re-sent cut to 256 characters each, later warnings are cut likewise, and once the
//!   total is reached again nothing more is added.
//!
//! So a request whose body carries 150,000 unknown fields gets a few dozen headers, not
//! 150,000, and the recorder itself holds at most the same few (after truncation starts, a
//! warning over the total is dropped before it is stored).

use std::collections::HashSet;

use http::{HeaderMap, HeaderValue};

const TOTAL_CHARS: usize = 4 * 1024;
const ITEM_CHARS: usize = 256;

/// The warnings of one response.
#[derive(Debug, Default)]
pub struct Warnings {
    seen: HashSet<String>,
    /// Texts in the order they were recorded, whole.
    ordered: Vec<String>,
    /// Characters of the texts as they will be sent.
    written: usize,
    truncating: bool,
}

/// `text` cut to the length one warning is cut to (also used for other lists of
/// client-chosen names, such as strict decoding errors).
pub fn cut(text: &str) -> &str {
    match text.char_indices().nth(ITEM_CHARS) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

impl Warnings {
    pub fn add(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() || (self.truncating && self.written >= TOTAL_CHARS) {
            return;
        }
        if self.seen.contains(&text) {
            return;
        }
        let chars = text.chars().count();
        if self.truncating {
            self.written += chars.min(ITEM_CHARS);
        } else if self.written + chars <= TOTAL_CHARS {
            self.written += chars;
        } else {
            // Replay: everything so far counts at its truncated length.
            self.truncating = true;
            self.written = self
                .ordered
                .iter()
                .map(|t| t.chars().count().min(ITEM_CHARS))
                .sum::<usize>()
                + chars.min(ITEM_CHARS);
        }
        self.seen.insert(text.clone());
        self.ordered.push(text);
    }

    pub fn extend(&mut self, texts: impl IntoIterator<Item = String>) {
        for t in texts {
            self.add(t);
        }
    }

    /// The texts as they are sent (truncated when the total was exceeded).
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.ordered
            .iter()
            .map(|t| if self.truncating { cut(t) } else { t.as_str() })
    }

    /// Append the `Warning` headers.
    pub fn write(&self, headers: &mut HeaderMap) {
        for text in self.texts() {
            if let Ok(v) = HeaderValue::from_bytes(header_value(text).as_bytes()) {
                headers.append(http::header::WARNING, v);
            }
        }
    }
}

/// `299 - "<text>"` with upstream's quoting: `"` and `\` escaped, control characters as
/// `\uXXXX` (so no text can end the header or start another).
fn header_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str("299 - \"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_and_truncates_like_upstream() {
        let mut w = Warnings::default();
        w.add("a".repeat(300));
        w.add("a".repeat(300));
        w.add("bb");
        assert_eq!(w.texts().count(), 2);
        assert_eq!(w.texts().next().map(str::len), Some(300));
        // Crossing 4 KiB switches to truncation: earlier texts are cut to 256 as well.
        for i in 0..20 {
            w.add(format!("{i}{}", "c".repeat(400)));
        }
        assert!(w.texts().all(|t| t.chars().count() <= ITEM_CHARS));
        let total: usize = w.texts().map(|t| t.chars().count()).sum();
        assert!(total <= TOTAL_CHARS + ITEM_CHARS, "{total}");
        let n = w.texts().count();
        // Nothing more once the total is reached.
        for i in 0..150_000 {
            w.add(format!("unknown field \"spec.f{i}\""));
        }
        assert_eq!(w.texts().count(), n);
        assert!(w.ordered.len() < 40);
    }

    #[test]
    fn many_small_warnings_stop_at_the_total() {
        let mut w = Warnings::default();
        for i in 0..150_000 {
            w.add(format!("unknown field \"spec.f{i}\""));
        }
        let total: usize = w.texts().map(|t| t.chars().count()).sum();
        assert!(total <= TOTAL_CHARS + ITEM_CHARS, "{total}");
        assert!(w.texts().count() < 300);
        let mut h = HeaderMap::new();
        w.write(&mut h);
        assert_eq!(
            h.get_all(http::header::WARNING).iter().count(),
            w.texts().count()
        );
    }

    #[test]
    fn header_values_are_quoted() {
        assert_eq!(header_value("a \"b\" \\ c"), r#"299 - "a \"b\" \\ c""#);
        assert_eq!(header_value("x\ny"), r#"299 - "x\u000ay""#);
        assert_eq!(header_value("Iñtër"), "299 - \"Iñtër\"");
    }
}
