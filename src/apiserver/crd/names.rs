//! DNS-style name checks with apimachinery's exact error strings
//! (`k8s.io/apimachinery/pkg/util/validation`: `IsDNS1035Label`, `IsDNS1123Subdomain`).
//!
//! CRD names, group, plural/singular/kind, short names, categories and version names all go
//! through these; the messages end up verbatim in 422 responses, so they are copied exactly,
//! including Go's `RegexError` formatting quirk (`'my-name',  or 'abc-123', `).

const DNS1035_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_rfc1123_label_shape(s: &[u8]) -> bool {
    match (s.first(), s.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f)
                && is_lower_alnum(l)
                && s.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `IsDNS1035Label`: empty result means valid.
pub(super) fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1035_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1035_LABEL_MAX} characters"
        ));
    }
    let b = s.as_bytes();
    let starts_alpha = b.first().is_some_and(|c| c.is_ascii_lowercase());
    if !(starts_alpha && is_rfc1123_label_shape(b)) {
        errs.push(DNS1035_MSG.to_string());
    }
    errs
}

/// `IsDNS1123Subdomain`: empty result means valid.
pub(super) fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if !s
        .split('.')
        .all(|part| is_rfc1123_label_shape(part.as_bytes()))
    {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1035_labels() {
        for ok in ["a", "crontabs", "ct", "v1beta1", "a-b"] {
            assert!(dns1035_label(ok).is_empty(), "{ok}");
        }
        for bad in ["", "1abc", "a_b", "A", "a-", "-a", "a.b"] {
            assert_eq!(dns1035_label(bad), vec![DNS1035_MSG.to_string()], "{bad}");
        }
        let long = "a".repeat(64);
        assert_eq!(
            dns1035_label(&long),
            vec!["must be no more than 63 characters".to_string()]
        );
    }

    #[test]
    fn dns1123_subdomains() {
        for ok in ["example.com", "stable.example.com", "a", "1.2"] {
            assert!(dns1123_subdomain(ok).is_empty(), "{ok}");
        }
        for bad in ["", "Example.com", "a..b", ".a", "a.", "a_b.com"] {
            assert_eq!(dns1123_subdomain(bad).len(), 1, "{bad}");
        }
    }
}
