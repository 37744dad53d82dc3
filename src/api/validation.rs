//! Name and label rules from upstream's `apimachinery/pkg/util/validation`: DNS-1123 subdomains
//! and labels, qualified names for label and annotation keys, label values. Each check returns
//! upstream's message so API errors read the same as on a real cluster.

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// RFC 1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.chars().all(is_label_char)
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else if s.len() > DNS1123_LABEL_MAX {
        Err(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ))
    } else {
        Err(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
             '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .into(),
        )
    }
}

/// RFC 1123 subdomain: dot-separated labels (dots allowed), ≤ 253.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= DNS1123_SUBDOMAIN_MAX
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(is_label_char)
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else if s.len() > DNS1123_SUBDOMAIN_MAX {
        Err(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ))
    } else {
        Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .into(),
        )
    }
}

/// A qualified name's name part: alphanumerics, '-', '_', '.', alphanumeric at both ends, ≤ 63.
fn qualified_name_part(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
             '123-abc', regex used for validation is \
             '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                .into(),
        )
    }
}

/// Label and annotation keys: `[prefix/]name` with a DNS subdomain prefix.
pub fn label_key(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
            qualified_name_part(name)
        }
        None => qualified_name_part(s),
    }
}

/// Label values: empty, or like a qualified name part.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    qualified_name_part(s).map_err(|_| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
         or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or \
         'my_value',  or '12345', regex used for validation is \
         '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("web-0.example").is_ok());
        assert!(dns1123_subdomain("Web").is_err());
        assert!(dns1123_subdomain("-a").is_err());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain(&"a".repeat(254)).is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1123_label("kube-system").is_ok());
    }

    #[test]
    fn labels() {
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("app").is_ok());
        assert!(label_key("/x").is_err());
        assert!(label_key("Bad_Prefix/x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_3").is_ok());
        assert!(label_value("bad value").is_err());
        assert!(label_value(&"x".repeat(64)).is_err());
    }
}
