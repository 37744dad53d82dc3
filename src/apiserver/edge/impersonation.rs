//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`), as upstream's
//! `WithImpersonation` filter: the `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`
//! and `Impersonate-Extra-*` headers make the request act as another identity, once the real
//! caller is authorized to `impersonate` each part of it.
//!
//! The checks copy upstream: `impersonate` on `users` (core group, name = the user), or on
//! `serviceaccounts` in their namespace for a `system:serviceaccount:<ns>:<name>` user; on
//! `groups` for each group; on `uids` and `userextras/<key>` in `authentication.k8s.io`. Every
//! check is a Cedar decision like any other, so only a policy grants it (`system/masters`
//! does). The impersonated identity gets `system:authenticated` (and a service account its
//! `system:serviceaccounts` groups), as upstream; groups without a user are refused. What the
//! impersonated user may do is then decided as if they had asked — and the audit line records
//! them.

use http::HeaderMap;

use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::State;
use crate::auth::{Attributes, UserInfo};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Whether the request asks to impersonate anyone (cheap; the common case is no).
pub fn requested(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| {
        let k = k.as_str();
        k == USER || k == GROUP || k == UID || k.starts_with(EXTRA_PREFIX)
    })
}

/// The identity the request acts as: `real` when it impersonates no one, else the
/// impersonated user once `real` may impersonate every part of it (403 otherwise).
pub fn resolve(state: &State, real: UserInfo, headers: &HeaderMap) -> ApiResult<UserInfo> {
    if !requested(headers) {
        return Ok(real);
    }
    let text = |name: &str| -> ApiResult<Vec<String>> {
        headers
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str().map(str::to_string).map_err(|_| {
                    ApiError::bad_request(format!("the {name} header is not valid text"))
                })
            })
            .collect()
    };
    let users = text(USER)?;
    let groups = text(GROUP)?;
    let uids = text(UID)?;
    let Some(name) = users.first().filter(|u| !u.is_empty()).cloned() else {
        return Err(ApiError::bad_request(
            "requested an impersonation of groups, a uid or extras without impersonating a user",
        ));
    };
    if users.len() > 1 || uids.len() > 1 {
        return Err(ApiError::bad_request(
            "only one user and one uid may be impersonated",
        ));
    }
    // (apiGroup, resource, subresource, namespace, name) the caller must `impersonate`.
    let mut checks: Vec<[String; 5]> = Vec::new();
    let check = |g: &str, r: &str, sub: &str, ns: &str, n: &str| {
        [
            g.to_string(),
            r.to_string(),
            sub.to_string(),
            ns.to_string(),
            n.to_string(),
        ]
    };
    match sa_parts(&name) {
        Some((ns, sa)) => checks.push(check("", "serviceaccounts", "", ns, sa)),
        None => checks.push(check("", "users", "", "", &name)),
    }
    for g in &groups {
        checks.push(check("", "groups", "", "", g));
    }
    for u in &uids {
        checks.push(check("authentication.k8s.io", "uids", "", "", u));
    }
    let mut header_keys: Vec<String> = headers
        .keys()
        .filter_map(|k| k.as_str().strip_prefix(EXTRA_PREFIX).map(str::to_string))
        .collect();
    header_keys.dedup();
    let mut extra = std::collections::BTreeMap::new();
    for header_key in header_keys {
        // Header names cannot carry every character an extra key may hold (`/`, upper case
        // is folded): clients percent-encode the key, as upstream's `unescapeExtraKey`.
        let key = percent_decode(&header_key).ok_or_else(|| {
            ApiError::bad_request(format!(
                "the {EXTRA_PREFIX}{header_key} header name is not validly percent-encoded"
            ))
        })?;
        let values = text(&format!("{EXTRA_PREFIX}{header_key}"))?;
        for v in &values {
            checks.push(check("authentication.k8s.io", "userextras", &key, "", v));
        }
        extra.insert(key, values);
    }
    for [group, resource, sub, namespace, target] in &checks {
        let path = format!("impersonate:{group}/{resource}/{sub}@{namespace}/{target}");
        let attrs = Attributes {
            user: &real,
            verb: "impersonate",
            resource_request: true,
            api_group: group,
            resource,
            subresource: sub,
            namespace,
            name: target,
            path: &path,
        };
        let d = state.enforcement.authorize(&attrs);
        if !d.is_allowed() {
            return Err(crate::apiserver::status::forbidden(&attrs, d.reason()));
        }
    }
    let mut out_groups = groups;
    if let Some((ns, _)) = sa_parts(&name) {
        for g in [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ] {
            if !out_groups.contains(&g) {
                out_groups.push(g);
            }
        }
    }
    let user = UserInfo {
        name,
        uid: uids.into_iter().next().unwrap_or_default(),
        groups: out_groups,
        extra,
    };
    // Upstream adds system:authenticated to every impersonated user but the anonymous one.
    Ok(if user.name == "system:anonymous" {
        user
    } else {
        user.with_authenticated_group()
    })
}

/// `%XX` escapes decoded (URL path unescaping, as Go's `url.PathUnescape`); `None` for a
/// malformed escape or non-UTF-8. `percent-encoding` decodes; it passes a malformed escape
/// through unchanged, so escapes are checked first, as Go refuses them.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        let hex = bytes.get(i + 1..i + 3)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn sa_parts(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_split() {
        assert_eq!(sa_parts("system:serviceaccount:ns:sa"), Some(("ns", "sa")));
        assert_eq!(sa_parts("system:serviceaccount:ns"), None);
        assert_eq!(sa_parts("bob"), None);
    }

    #[test]
    fn no_headers_means_no_impersonation() {
        assert!(!requested(&HeaderMap::new()));
        let mut h = HeaderMap::new();
        h.insert("impersonate-user", http::HeaderValue::from_static("bob"));
        assert!(requested(&h));
    }

    #[test]
    fn extra_keys_are_percent_decoded() {
        assert_eq!(
            percent_decode("example.com%2fteam").as_deref(),
            Some("example.com/team")
        );
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%+1x"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
