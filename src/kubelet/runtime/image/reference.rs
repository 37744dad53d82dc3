//! Image references normalised as docker and containerd do: `busybox` →
//! `docker.io/library/busybox:latest`, `me/app:1` → `docker.io/me/app:1`, a registry host
//! (has a `.` or `:` or is `localhost`) kept, `@sha256:` digests kept without a tag.

use super::Error;

pub fn normalize(reference: &str) -> Result<String, Error> {
    let r = reference.trim();
    if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(format!(
            "invalid image reference {reference:?}"
        )));
    }
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if repo.is_empty() || tag.is_some_and(|t| t.is_empty()) {
        return Err(Error::Invalid(format!(
            "invalid image reference {reference:?}"
        )));
    }
    let first = repo.split('/').next().unwrap_or("");
    let has_host =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_host {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    if full.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(Error::Invalid(format!(
            "invalid image reference {reference:?}: repository names must be lowercase"
        )));
    }
    Ok(match (digest, tag) {
        (Some(d), _) => format!("{full}@{d}"),
        (None, Some(t)) => format!("{full}:{t}"),
        (None, None) => format!("{full}:latest"),
    })
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn docker_rules() {
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize("me/app:1").unwrap(), "docker.io/me/app:1");
        assert_eq!(
            normalize("localhost:5000/x").unwrap(),
            "localhost:5000/x:latest"
        );
        assert_eq!(
            normalize("reg.example/a/b:v@sha256:ab").unwrap(),
            "reg.example/a/b@sha256:ab"
        );
        assert!(normalize("").is_err());
        assert!(normalize("Busybox").is_err());
        assert!(normalize("a b").is_err());
    }
}
