//! Upstream's audit policy (`audit.k8s.io/v1` `Policy`): an ordered list of rules, the first
//! rule that matches a request decides its level. A request no rule matches is not logged
//! (level None), as upstream. Rampart caps Secrets, ConfigMaps and token reviews / service
//! account tokens at Metadata whatever the policy says, so their bodies are never recorded.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub level: Level,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(rename = "nonResourceURLs", default)]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the audit policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid audit policy {path}: {why}")]
    Invalid { path: String, why: String },
}

/// What a rule is matched against.
pub struct Request<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub verb: &'a str,
    pub resource_request: bool,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub path: &'a str,
}

/// Resources whose level never exceeds Metadata (upstream's recommended policy).
const METADATA_ONLY: &[(&str, &str)] = &[
    ("", "secrets"),
    ("", "configmaps"),
    ("authentication.k8s.io", "tokenreviews"),
    ("", "serviceaccounts/token"),
];

impl Policy {
    /// The highest level any rule can give: the request path captures bodies only when
    /// this is Request or more.
    pub fn max_level(&self) -> Level {
        self.rules
            .iter()
            .map(|r| r.level)
            .max()
            .unwrap_or(Level::None)
    }

    /// Metadata for every request.
    pub fn default_policy() -> Policy {
        Policy {
            api_version: "audit.k8s.io/v1".into(),
            kind: "Policy".into(),
            rules: vec![Rule {
                level: Level::Metadata,
                users: vec![],
                user_groups: vec![],
                verbs: vec![],
                resources: vec![],
                namespaces: vec![],
                non_resource_urls: vec![],
                omit_stages: vec![],
            }],
            omit_stages: vec![],
        }
    }

    pub fn load(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|why| PolicyError::Invalid { path: p, why })
    }

    pub fn parse(text: &str) -> Result<Policy, String> {
        let policy: Policy = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if policy.kind != "Policy" {
            return Err(format!("kind must be Policy, not {:?}", policy.kind));
        }
        if policy.api_version != "audit.k8s.io/v1" {
            return Err(format!(
                "apiVersion must be audit.k8s.io/v1, not {:?}",
                policy.api_version
            ));
        }
        for (i, r) in policy.rules.iter().enumerate() {
            if r.resource_request_only() && !r.non_resource_urls.is_empty() {
                return Err(format!(
                    "rule {i}: nonResourceURLs cannot be combined with resources or namespaces"
                ));
            }
            for s in r.omit_stages.iter().chain(&policy.omit_stages) {
                if !matches!(
                    s.as_str(),
                    "RequestReceived" | "ResponseStarted" | "ResponseComplete" | "Panic"
                ) {
                    return Err(format!("unknown stage {s:?} in omitStages"));
                }
            }
        }
        Ok(policy)
    }

    /// The level for a request at `stage` (None when the rule omits that stage).
    pub fn level(&self, req: &Request<'_>, stage: &str) -> Level {
        let Some(rule) = self.rules.iter().find(|r| r.matches(req)) else {
            return Level::None;
        };
        if rule
            .omit_stages
            .iter()
            .chain(&self.omit_stages)
            .any(|s| s == stage)
        {
            return Level::None;
        }
        let full = if req.subresource.is_empty() {
            req.resource.to_string()
        } else {
            format!("{}/{}", req.resource, req.subresource)
        };
        let capped = req.resource_request
            && METADATA_ONLY
                .iter()
                .any(|(g, r)| *g == req.group && (*r == req.resource || *r == full));
        if capped {
            rule.level.min(Level::Metadata)
        } else {
            rule.level
        }
    }
}

impl Rule {
    fn resource_request_only(&self) -> bool {
        !self.resources.is_empty() || !self.namespaces.is_empty()
    }

    fn matches(&self, req: &Request<'_>) -> bool {
        if !self.users.is_empty() && !self.users.iter().any(|u| u == req.user) {
            return false;
        }
        if !self.user_groups.is_empty() && !self.user_groups.iter().any(|g| req.groups.contains(g))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.iter().any(|v| v == req.verb) {
            return false;
        }
        if req.resource_request {
            if !self.non_resource_urls.is_empty() {
                return false;
            }
            if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == req.namespace) {
                return false;
            }
            if !self.resources.is_empty() && !self.resources.iter().any(|g| g.matches(req)) {
                return false;
            }
            true
        } else {
            if self.resource_request_only() {
                return false;
            }
            self.non_resource_urls.is_empty()
                || self
                    .non_resource_urls
                    .iter()
                    .any(|u| match u.strip_suffix('*') {
                        Some(prefix) => req.path.starts_with(prefix),
                        None => u == req.path,
                    })
        }
    }
}

impl GroupResources {
    /// Upstream's matching: `pods` (no subresources), `pods/log`, `pods/*`, `*/scale`, `*`.
    fn matches(&self, req: &Request<'_>) -> bool {
        if self.group != req.group {
            return false;
        }
        let resource_ok = self.resources.is_empty()
            || self.resources.iter().any(|r| {
                if req.subresource.is_empty() {
                    r == req.resource || r == "*"
                } else {
                    let full = format!("{}/{}", req.resource, req.subresource);
                    *r == full
                        || *r == "*"
                        || *r == format!("{}/*", req.resource)
                        || *r == format!("*/{}", req.subresource)
                }
            });
        resource_ok
            && (self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == req.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(resource: &'a str, groups: &'a [String]) -> Request<'a> {
        Request {
            user: "alice",
            groups,
            verb: "get",
            resource_request: true,
            group: "",
            resource,
            subresource: "",
            namespace: "default",
            name: "x",
            path: "/api/v1/namespaces/default/x",
        }
    }

    #[test]
    fn first_match_wins_and_secrets_are_capped() {
        let p = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources: [{group: \"\", resources: [events]}]\n- level: RequestResponse\n",
        )
        .unwrap();
        assert_eq!(
            p.level(&req("events", &[]), "ResponseComplete"),
            Level::None
        );
        assert_eq!(
            p.level(&req("pods", &[]), "ResponseComplete"),
            Level::RequestResponse
        );
        assert_eq!(
            p.level(&req("secrets", &[]), "ResponseComplete"),
            Level::Metadata
        );
        assert!(Policy::parse("kind: Policy\nrules: [{level: Bogus}]").is_err());
        assert!(Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Nope\n").is_err());
    }
}
