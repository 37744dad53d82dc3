//! Request classification, as upstream's `RequestInfoFactory`: a URL path becomes a verb
//! (get/list/watch/create/update/patch/delete/deletecollection), group, version, resource,
//! subresource, namespace and name; everything else is a non-resource request.
//!
//! [`check_scope`] is upstream's router, reduced to the question of scope: which resources are
//! served under `/namespaces/{ns}/` and which at the cluster level. It runs before
//! authorization, so the scope the authorizer sees is the scope the handler acts on.
//! Invariants (as upstream's API installer):
//! - no cluster-scoped resource is served under `/namespaces/{ns}/` (404) — the namespace's
//!   own `/api/v1/namespaces/{name}[/status|/finalize]` is the namespace object, not a
//!   resource inside one;
//! - a namespaced object is only addressed inside its namespace: without one, a path with a
//!   name is 404 and the collection serves only list and watch (405 for other verbs; 404 when
//!   the resource cannot be listed at all, e.g. LocalSubjectAccessReview);
//! - paths with empty segments or parts after the subresource (other than a proxy's path) are
//!   served by no route (404).

use std::collections::HashMap;

/// What a resource request is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub resource_request: bool,
    pub path: String,
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The path named a namespace as `/namespaces/{ns}/{resource}...` (the namespace object's
    /// own path sets `namespace` to its name without this).
    pub namespaced_path: bool,
    /// The path has segments no route serves: an empty one, or more after the subresource.
    pub malformed: bool,
}

impl RequestInfo {
    /// The request as one that no resource route serves, for its audit line: it names no
    /// object, and so no scope, the request never reached.
    pub fn unrouted(&self, method: &str) -> RequestInfo {
        RequestInfo {
            path: self.path.clone(),
            verb: method.to_ascii_lowercase(),
            ..Default::default()
        }
    }
}

/// Why a resource path is served by no route (see [`check_scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeError {
    /// 404: no such route.
    NotFound,
    /// 405: the collection exists at this scope, the verb does not.
    MethodNotAllowed,
}

/// Whether `info` addresses `ri` at a scope it is served at. Run before authorization (and
/// again by the dispatcher, against the entry it serves), so a request is never authorized in
/// one scope and served in another.
pub fn check_scope(info: &RequestInfo, ri: &crate::api::ResourceInfo) -> Result<(), ScopeError> {
    if info.malformed && info.subresource != "proxy" {
        return Err(ScopeError::NotFound);
    }
    if info.namespaced_path {
        // `/namespaces/{ns}/...` serves namespaced resources only, in a named namespace.
        return if ri.namespaced && !info.namespace.is_empty() {
            Ok(())
        } else {
            Err(ScopeError::NotFound)
        };
    }
    if !ri.namespaced {
        return Ok(());
    }
    // A namespaced resource without a namespace: only the all-namespaces list (and watch).
    if !info.name.is_empty() || !ri.has_verb("list") {
        return Err(ScopeError::NotFound);
    }
    match info.verb.as_str() {
        "list" | "watch" => Ok(()),
        _ => Err(ScopeError::MethodNotAllowed),
    }
}

/// Decoded query parameters (last value wins, as Go's `url.Values.Get`).
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        if let Some(q) = raw {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                map.insert(k.into_owned(), v.into_owned());
            }
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// Classify `method path`. `watch` is decided by the query for lists, as upstream.
pub fn classify(method: &str, path: &str, query: &Query) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.to_ascii_lowercase(),
        ..Default::default()
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", version, rest @ ..] => {
            info.version = version.to_string();
            rest
        }
        ["apis", group, version, rest @ ..] => {
            info.group = group.to_string();
            info.version = version.to_string();
            rest
        }
        _ => return info,
    };
    if rest.is_empty() {
        return info;
    }
    let mut rest = rest;
    info.malformed = rest.iter().any(|p| p.is_empty());
    // /namespaces/{ns}/{resource}...: a namespaced resource. /namespaces/{name}[/{sub}] is the
    // namespace object itself (its "namespace" is its own name, as upstream).
    if rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize") {
        info.namespace = rest[1].to_string();
        info.namespaced_path = true;
        rest = &rest[2..];
    }
    info.resource_request = true;
    match rest {
        [resource] => info.resource = resource.to_string(),
        [resource, name] => {
            info.resource = resource.to_string();
            info.name = name.to_string();
        }
        [resource, name, sub, more @ ..] => {
            info.resource = resource.to_string();
            info.name = name.to_string();
            info.subresource = sub.to_string();
            info.malformed |= !more.is_empty();
        }
        [] => {
            info.resource_request = false;
            return info;
        }
    }
    if info.resource == "namespaces" && info.namespace.is_empty() {
        info.namespace = info.name.clone();
    }
    info.verb = match (method, info.name.is_empty()) {
        ("GET" | "HEAD", true) if query.flag("watch") => "watch".into(),
        ("GET" | "HEAD", true) => "list".into(),
        ("GET" | "HEAD", false) if query.flag("watch") => "watch".into(),
        ("GET" | "HEAD", false) => "get".into(),
        ("POST", _) => "create".into(),
        ("PUT", _) => "update".into(),
        ("PATCH", _) => "patch".into(),
        ("DELETE", true) => "deletecollection".into(),
        ("DELETE", false) => "delete".into(),
        (other, _) => other.to_ascii_lowercase(),
    };
    // Since 1.35 upstream authorises exec/attach/portforward opened with a GET (the WebSocket
    // upgrade kubectl uses) as `create`, as the POST (SPDY) always was: `get pods/exec` alone
    // must not open a shell.
    if info.verb == "get"
        && info.group.is_empty()
        && info.resource == "pods"
        && matches!(info.subresource.as_str(), "exec" | "attach" | "portforward")
    {
        info.verb = "create".into();
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: &str, path: &str, q: &str) -> RequestInfo {
        classify(method, path, &Query::parse(Some(q)))
    }

    #[test]
    fn streaming_subresources_need_create_even_for_get() {
        for sub in ["exec", "attach", "portforward"] {
            let path = format!("/api/v1/namespaces/d/pods/p/{sub}");
            assert_eq!(c("GET", &path, "command=sh").verb, "create", "{sub}");
            assert_eq!(c("POST", &path, "").verb, "create", "{sub}");
        }
        assert_eq!(c("GET", "/api/v1/namespaces/d/pods/p/log", "").verb, "get");
    }

    #[test]
    fn resource_paths() {
        let i = c("GET", "/api/v1/namespaces/default/pods", "");
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("list", "default", "pods")
        );
        let i = c("GET", "/api/v1/namespaces/default/pods", "watch=true");
        assert_eq!(i.verb, "watch");
        let i = c(
            "PUT",
            "/apis/apps/v1/namespaces/ns/deployments/web/scale",
            "",
        );
        assert_eq!(
            (
                i.group.as_str(),
                i.name.as_str(),
                i.subresource.as_str(),
                i.verb.as_str()
            ),
            ("apps", "web", "scale", "update")
        );
        let i = c("GET", "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("namespaces", "kube-system", "kube-system")
        );
        let i = c("PUT", "/api/v1/namespaces/gone/finalize", "");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("namespaces", "gone", "finalize")
        );
        let i = c("GET", "/api/v1/namespaces", "");
        assert_eq!(
            (i.resource.as_str(), i.verb.as_str()),
            ("namespaces", "list")
        );
        let i = c("DELETE", "/api/v1/nodes", "");
        assert_eq!(i.verb, "deletecollection");
        let i = c("GET", "/healthz", "");
        assert!(!i.resource_request);
        let i = c("GET", "/apis/apps/v1", "");
        assert!(!i.resource_request);
    }

    fn scope(method: &str, path: &str, q: &str) -> Result<(), ScopeError> {
        let i = c(method, path, q);
        let ri = crate::api::resources::builtin()
            .iter()
            .find(|r| r.group == i.group && r.version == i.version && r.plural == i.resource)
            .unwrap_or_else(|| panic!("no resource for {path}"))
            .clone();
        check_scope(&i, &ri)
    }

    #[test]
    fn cluster_scoped_resources_are_not_served_inside_a_namespace() {
        use ScopeError::*;
        for (method, path) in [
            ("GET", "/api/v1/namespaces/own/namespaces/other"),
            ("GET", "/api/v1/namespaces/own/namespaces"),
            ("DELETE", "/api/v1/namespaces/own/namespaces/other"),
            ("PATCH", "/api/v1/namespaces/own/namespaces/other/status"),
            ("PUT", "/api/v1/namespaces/own/namespaces/own/finalize"),
            ("GET", "/api/v1/namespaces/own/nodes/n1"),
            ("GET", "/api/v1/namespaces/own/persistentvolumes"),
            (
                "DELETE",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/own/clusterroles",
            ),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/namespaces/own/selfsubjectaccessreviews",
            ),
            ("GET", "/api/v1/namespaces//pods"),
            ("GET", "/api/v1/namespaces/own/pods//status"),
            ("PUT", "/api/v1/namespaces/own/pods/p/status/extra"),
            ("GET", "/api/v1/namespaces/own/status/extra"),
            ("GET", "/api/v1/pods/p"),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/localsubjectaccessreviews",
            ),
        ] {
            assert_eq!(scope(method, path, ""), Err(NotFound), "{method} {path}");
        }
        for (method, path) in [("POST", "/api/v1/pods"), ("DELETE", "/api/v1/configmaps")] {
            assert_eq!(
                scope(method, path, ""),
                Err(MethodNotAllowed),
                "{method} {path}"
            );
        }
        for (method, path, q) in [
            ("GET", "/api/v1/namespaces/own", ""),
            ("PUT", "/api/v1/namespaces/own/status", ""),
            ("PUT", "/api/v1/namespaces/own/finalize", ""),
            ("DELETE", "/api/v1/namespaces/own", ""),
            ("GET", "/api/v1/namespaces", "watch=1"),
            ("GET", "/api/v1/pods", ""),
            ("GET", "/api/v1/pods", "watch=true"),
            ("DELETE", "/api/v1/namespaces/own/pods", ""),
            ("GET", "/api/v1/nodes/n1", ""),
            ("GET", "/api/v1/namespaces/own/pods/p/log", ""),
        ] {
            assert_eq!(scope(method, path, q), Ok(()), "{method} {path}");
        }
    }
}
