//! Request classification, as upstream's `RequestInfoFactory`: a URL path becomes a verb
//! (get/list/watch/create/update/patch/delete/deletecollection), group, version, resource,
//! subresource, namespace and name; everything else is a non-resource request.

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
    // /namespaces/{ns}/{resource}...: a namespaced resource. /namespaces/{name}[/{sub}] is the
    // namespace object itself (its "namespace" is its own name, as upstream).
    if rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize") {
        info.namespace = rest[1].to_string();
        rest = &rest[2..];
    }
    info.resource_request = true;
    match rest {
        [resource] => info.resource = resource.to_string(),
        [resource, name] => {
            info.resource = resource.to_string();
            info.name = name.to_string();
        }
        [resource, name, sub, ..] => {
            info.resource = resource.to_string();
            info.name = name.to_string();
            info.subresource = sub.to_string();
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
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: &str, path: &str, q: &str) -> RequestInfo {
        classify(method, path, &Query::parse(Some(q)))
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
}
