//! Which Pod Security level applies where: upstream's namespace labels
//! `pod-security.kubernetes.io/<mode>` and `<mode>-version` for the three modes `enforce`
//! (deny), `warn` (a `Warning` header for the client) and `audit` (an audit annotation).
//!
//! Rampart's one departure from upstream: `enforce` defaults to `baseline` (upstream's
//! default is `privileged`); `warn` and `audit` default to nothing, as upstream. kube-system
//! is exempt in every mode. Labels are validated on namespace writes as upstream's
//! PodSecurity plugin does (`must be one of privileged, baseline, restricted`); an invalid
//! value that is already stored fails closed to `restricted` for enforce.

use serde_json::Value;

pub const LEVELS: [&str; 3] = ["privileged", "baseline", "restricted"];
const PREFIX: &str = "pod-security.kubernetes.io/";

/// One mode's level and version (`baseline`, `latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: String,
    pub version: String,
}

impl LevelVersion {
    fn new(level: &str, version: &str) -> LevelVersion {
        LevelVersion {
            level: level.to_string(),
            version: version.to_string(),
        }
    }

    /// `<level>:<version>`, as upstream names a policy in messages.
    pub fn policy(&self) -> String {
        format!("{}:{}", self.level, self.version)
    }

    pub fn is_privileged(&self) -> bool {
        self.level == "privileged"
    }
}

/// The levels a namespace's labels ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    pub enforce: LevelVersion,
    /// `None` when the mode is not set (or is `privileged`, which checks nothing).
    pub warn: Option<LevelVersion>,
    pub audit: Option<LevelVersion>,
}

fn label<'a>(labels: Option<&'a Value>, key: &str) -> Option<&'a str> {
    labels.and_then(|l| l[key].as_str())
}

fn version(labels: Option<&Value>, mode: &str) -> String {
    label(labels, &format!("{PREFIX}{mode}-version"))
        .filter(|v| valid_version(v))
        .unwrap_or("latest")
        .to_string()
}

/// `latest` or `v1.<minor>`, as upstream accepts.
fn valid_version(v: &str) -> bool {
    v == "latest"
        || v.strip_prefix("v1.")
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
}

impl NamespacePolicy {
    /// The policy for pods in `namespace` with these namespace labels.
    pub fn of(namespace: &str, labels: Option<&Value>) -> NamespacePolicy {
        if namespace == "kube-system" {
            return NamespacePolicy {
                enforce: LevelVersion::new("privileged", "latest"),
                warn: None,
                audit: None,
            };
        }
        let enforce = match label(labels, &format!("{PREFIX}enforce")) {
            None => "baseline",
            Some(l) if LEVELS.contains(&l) => l,
            Some(_) => "restricted",
        };
        let optional = |mode: &str| {
            label(labels, &format!("{PREFIX}{mode}"))
                .filter(|l| LEVELS.contains(l) && *l != "privileged")
                .map(|l| LevelVersion::new(l, &version(labels, mode)))
        };
        NamespacePolicy {
            enforce: LevelVersion::new(enforce, &version(labels, "enforce")),
            warn: optional("warn"),
            audit: optional("audit"),
        }
    }
}

/// Upstream's field errors for a namespace's Pod Security labels: (field path, message).
pub fn validate_labels(labels: Option<&Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for mode in ["enforce", "warn", "audit"] {
        let key = format!("{PREFIX}{mode}");
        if let Some(v) = label(labels, &key) {
            if !LEVELS.contains(&v) {
                out.push((
                    format!("metadata.labels[{key}]"),
                    format!(
                        "Invalid value: \"{v}\": must be one of {}",
                        LEVELS.join(", ")
                    ),
                ));
            }
        }
        let key = format!("{key}-version");
        if let Some(v) = label(labels, &key) {
            if !valid_version(v) {
                out.push((
                    format!("metadata.labels[{key}]"),
                    format!("Invalid value: \"{v}\": must be \"latest\" or \"v1.x\""),
                ));
            }
        }
    }
    out
}

/// The pod a workload's template would create (`spec.template`, or a CronJob's
/// `spec.jobTemplate.spec.template`), as an object Pod Security checks can read.
pub fn template_pod(obj: &Value) -> Option<Value> {
    let t = if obj["spec"]["template"]["spec"].is_object() {
        &obj["spec"]["template"]
    } else if obj["spec"]["jobTemplate"]["spec"]["template"]["spec"].is_object() {
        &obj["spec"]["jobTemplate"]["spec"]["template"]
    } else if obj["template"]["spec"].is_object() {
        // PodTemplate objects carry `template` at the top level.
        &obj["template"]
    } else {
        return None;
    };
    let mut meta = t["metadata"].clone();
    if !meta.is_object() {
        meta = serde_json::json!({});
    }
    meta["namespace"] = obj["metadata"]["namespace"].clone();
    meta["name"] = obj["metadata"]["name"].clone();
    Some(serde_json::json!({"metadata": meta, "spec": t["spec"]}))
}

/// Kinds whose pod templates upstream checks in warn and audit mode (never enforced: the
/// pods they create are).
pub fn has_pod_template(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "PodTemplate" | "ReplicationController")
            | (
                "apps",
                "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
            )
            | ("batch", "Job" | "CronJob")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modes_levels_and_versions() {
        let p = NamespacePolicy::of("default", None);
        assert_eq!(p.enforce.policy(), "baseline:latest");
        assert!(p.warn.is_none() && p.audit.is_none());
        let labels = json!({"pod-security.kubernetes.io/enforce": "privileged",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/warn-version": "v1.30",
            "pod-security.kubernetes.io/audit": "privileged"});
        let p = NamespacePolicy::of("x", Some(&labels));
        assert!(p.enforce.is_privileged());
        assert_eq!(p.warn.map(|w| w.policy()), Some("restricted:v1.30".into()));
        assert!(p.audit.is_none());
        let bad = json!({"pod-security.kubernetes.io/enforce": "strict"});
        assert_eq!(
            NamespacePolicy::of("x", Some(&bad)).enforce.level,
            "restricted"
        );
        assert!(NamespacePolicy::of("kube-system", Some(&bad))
            .enforce
            .is_privileged());
    }

    #[test]
    fn label_validation_names_the_field() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/warn-version": "1.2",
            "pod-security.kubernetes.io/audit": "baseline"});
        let errs = validate_labels(Some(&labels));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0].0,
            "metadata.labels[pod-security.kubernetes.io/enforce]"
        );
        assert!(errs[0]
            .1
            .contains("must be one of privileged, baseline, restricted"));
        assert!(errs[1].1.contains("must be \"latest\" or \"v1.x\""));
        assert!(validate_labels(None).is_empty());
    }

    #[test]
    fn templates_of_workloads() {
        let d = json!({"metadata": {"name": "d", "namespace": "n"},
            "spec": {"template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let p = template_pod(&d).unwrap();
        assert_eq!(p["metadata"]["name"], "d");
        assert_eq!(p["spec"]["containers"][0]["name"], "c");
        let cj = json!({"metadata": {"name": "j"}, "spec": {"jobTemplate": {"spec":
            {"template": {"spec": {"containers": []}}}}}});
        assert!(template_pod(&cj).is_some());
        assert!(template_pod(&json!({"spec": {}})).is_none());
        assert!(has_pod_template("apps", "Deployment") && !has_pod_template("", "Pod"));
    }
}
