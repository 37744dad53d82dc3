//! The aggregation layer (upstream's kube-aggregator, in miniature): requests for a
//! group/version an `APIService` hands to a Service are proxied to that Service's endpoint
//! over mTLS, after this server authenticated and authorized them.
//!
//! - [`Aggregator`] keeps the APIServices with a `spec.service` (remote ones), followed from
//!   the store, and what their last availability check found (the group/version's discovery
//!   document, or why it failed). APIServices without `spec.service` are local: their group
//!   is served in-process (every built-in group, custom resources, and any in-process group
//!   registered with a local APIService) and nothing here routes them.
//! - [`proxy`] forwards a request: to an endpoint address of the Service (upstream's
//!   `--enable-aggregator-routing`, which k3s turns on: no ClusterIP dataplane is needed on
//!   the server), verified against `spec.caBundle` as `<service>.<namespace>.svc` unless
//!   `spec.insecureSkipTLSVerify`, presenting the front-proxy client certificate and the
//!   caller's identity in `X-Remote-User`/`X-Remote-Group`/`X-Remote-Extra-*` (the caller's
//!   own credentials and any such headers it sent are dropped first).
//! - [`availability`] is upstream's availability controller: `ServiceNotFound`,
//!   `MissingEndpoints`, `FailedDiscoveryCheck` (the endpoint did not answer
//!   `GET /apis/<group>/<version>` with a 2xx) or `Passed`; and it publishes
//!   `kube-system/extension-apiserver-authentication` so extension servers know whom to
//!   trust for the `X-Remote-*` headers.
//!
//! Invariant: a group/version is routed here only when a remote APIService names it and no
//! in-process resource serves it (a built-in group cannot be hijacked by an APIService).

pub mod availability;
mod proxy;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use super::storage::Builtin;
use crate::apiserver::followers::follow::{follow, Follower};
use crate::store::Backend;

pub use proxy::proxy;

/// A remote APIService: where its group/version is served.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The APIService's name (`<version>.<group>`).
    pub name: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub service: String,
    /// `spec.service.port` (default 443).
    pub port: i64,
    /// `spec.caBundle`, PEM (base64-decoded).
    pub ca_bundle: Vec<u8>,
    pub insecure_skip_tls_verify: bool,
    pub group_priority: i64,
    pub version_priority: i64,
}

impl Target {
    /// The remote target an APIService names, `None` for a local one.
    pub fn of(obj: &Value) -> Option<Target> {
        use base64::Engine;
        let svc = obj["spec"]["service"].as_object()?;
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Some(Target {
            name: s(&obj["metadata"]["name"]),
            group: s(&obj["spec"]["group"]),
            version: s(&obj["spec"]["version"]),
            namespace: svc.get("namespace").map(s).unwrap_or_default(),
            service: svc.get("name").map(s).unwrap_or_default(),
            port: svc.get("port").and_then(Value::as_i64).unwrap_or(443),
            ca_bundle: obj["spec"]["caBundle"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default(),
            insecure_skip_tls_verify: obj["spec"]["insecureSkipTLSVerify"] == true,
            group_priority: obj["spec"]["groupPriorityMinimum"].as_i64().unwrap_or(0),
            version_priority: obj["spec"]["versionPriority"].as_i64().unwrap_or(0),
        })
    }

    /// The name the endpoint's serving certificate must carry (upstream's
    /// `<service>.<namespace>.svc`).
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }
}

/// What the last availability check of a remote APIService found.
#[derive(Clone, Debug)]
pub enum Checked {
    /// The endpoint answered discovery: its `APIResourceList`.
    Passed(Value),
    /// Why it is not available: (reason, message).
    Failed(&'static str, String),
}

/// The remote APIServices and their last checks.
#[derive(Default)]
pub struct Aggregator {
    /// APIService name → target.
    targets: RwLock<BTreeMap<String, Target>>,
    checked: RwLock<BTreeMap<String, Checked>>,
    /// Woken when a remote APIService appears or changes, so it is checked at once.
    pub changed: tokio::sync::Notify,
}

impl Aggregator {
    /// The remote target serving `path` (`/apis/<group>/<version>[/...]`), unless the group
    /// and version are served in-process (`local`).
    pub fn route(&self, path: &str, local: impl Fn(&str, &str) -> bool) -> Option<Target> {
        let rest = path.strip_prefix("/apis/")?;
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        if targets.is_empty() {
            return None; // the common case, decided without allocating
        }
        let mut parts = rest.splitn(3, '/');
        let (group, version) = (parts.next()?, parts.next()?);
        if group.is_empty() || version.is_empty() {
            return None;
        }
        let target = targets.get(&format!("{version}.{group}")).cloned()?;
        drop(targets);
        (!local(group, version)).then_some(target)
    }

    pub fn targets(&self) -> Vec<Target> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn checked(&self, name: &str) -> Option<Checked> {
        self.checked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn record(&self, name: &str, c: Checked) {
        self.checked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), c);
    }

    /// Aggregated groups for `/apis` (`APIGroup` objects), highest priority version first,
    /// for groups not served in-process.
    pub fn groups(&self, local_group: impl Fn(&str) -> bool) -> Vec<Value> {
        let mut by_group: BTreeMap<String, Vec<Target>> = BTreeMap::new();
        for t in self.targets() {
            if !local_group(&t.group) {
                by_group.entry(t.group.clone()).or_default().push(t);
            }
        }
        by_group
            .into_iter()
            .map(|(g, mut ts)| {
                ts.sort_by_key(|t| std::cmp::Reverse(t.version_priority));
                let versions: Vec<Value> = ts
                    .iter()
                    .map(|t| json!({"groupVersion": format!("{g}/{}", t.version), "version": t.version}))
                    .collect();
                json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
            })
            .collect()
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) entries for the remote groups, built
    /// from the discovery documents the availability checks fetched (upstream's discovery
    /// aggregation); a version not (yet) checked is listed `Stale` without resources.
    pub fn discovery_v2(&self, local_group: impl Fn(&str) -> bool) -> Vec<Value> {
        let mut by_group: BTreeMap<String, Vec<Target>> = BTreeMap::new();
        for t in self.targets() {
            if !local_group(&t.group) {
                by_group.entry(t.group.clone()).or_default().push(t);
            }
        }
        by_group
            .into_iter()
            .map(|(g, mut ts)| {
                ts.sort_by_key(|t| std::cmp::Reverse(t.version_priority));
                let versions: Vec<Value> = ts
                    .iter()
                    .map(|t| match self.checked(&t.name) {
                        Some(Checked::Passed(list)) => json!({
                            "version": t.version,
                            "resources": v2_resources(&g, &t.version, &list),
                            "freshness": "Current",
                        }),
                        _ => json!({"version": t.version, "resources": [], "freshness": "Stale"}),
                    })
                    .collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
            })
            .collect()
    }
}

/// An `APIResourceList`'s resources in the aggregated-discovery shape (subresources, named
/// `<resource>/<sub>` in v1, nested under their resource).
fn v2_resources(group: &str, version: &str, list: &Value) -> Vec<Value> {
    let all = list["resources"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<Value> = Vec::new();
    for r in all.iter() {
        let name = r["name"].as_str().unwrap_or_default();
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let mut v = json!({
            "resource": name,
            "responseKind": {"group": group, "version": version, "kind": r["kind"]},
            "scope": if r["namespaced"] == true { "Namespaced" } else { "Cluster" },
            "singularResource": r["singularName"],
            "verbs": r["verbs"],
        });
        for f in ["shortNames", "categories"] {
            if r[f].is_array() {
                v[f] = r[f].clone();
            }
        }
        let subs: Vec<Value> = all
            .iter()
            .filter_map(|s| {
                let sub = s["name"].as_str()?.strip_prefix(&format!("{name}/"))?;
                Some(json!({"subresource": sub,
                    "responseKind": {"group": group, "version": version, "kind": s["kind"]},
                    "verbs": s["verbs"]}))
            })
            .collect();
        if !subs.is_empty() {
            v["subresources"] = json!(subs);
        }
        out.push(v);
    }
    out
}

struct Follow(Arc<Aggregator>);

impl Follower for Follow {
    fn reset(&self, items: Vec<(String, Value)>) {
        let targets: BTreeMap<String, Target> = items
            .iter()
            .filter_map(|(_, o)| Target::of(o))
            .map(|t| (t.name.clone(), t))
            .collect();
        *self.0.targets.write().unwrap_or_else(|p| p.into_inner()) = targets;
        self.0.changed.notify_one();
    }
    fn apply(&self, _key: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let mut targets = self.0.targets.write().unwrap_or_else(|p| p.into_inner());
        match Target::of(obj) {
            Some(t) => {
                if targets.get(name) != Some(&t) {
                    targets.insert(name.to_string(), t);
                    self.0.changed.notify_one();
                }
            }
            None => {
                targets.remove(name);
            }
        }
    }
    fn remove(&self, _key: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        self.0
            .targets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// Follow the store's APIServices forever.
pub async fn follow_api_services(aggregator: Arc<Aggregator>, store: Arc<dyn Backend>) {
    follow(
        "APIService",
        Builtin::ApiServices.prefix(),
        store,
        Arc::new(Follow(aggregator)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_service(name: &str, group: &str, version: &str, svc: bool) -> Value {
        let mut o = json!({"metadata": {"name": name},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 10,
                     "caBundle": "LS0tLQ==", "insecureSkipTLSVerify": false}});
        if svc {
            o["spec"]["service"] = json!({"namespace": "ns", "name": "api", "port": 8443});
        }
        o
    }

    #[test]
    fn routes_only_remote_group_versions_not_served_locally() {
        let f = Follow(Arc::new(Aggregator::default()));
        f.reset(vec![
            (
                "k1".into(),
                api_service("v1.wardle.example.com", "wardle.example.com", "v1", true),
            ),
            ("k2".into(), api_service("v1.apps", "apps", "v1", true)),
            (
                "k3".into(),
                api_service("v1.local.example.com", "local.example.com", "v1", false),
            ),
        ]);
        let local = |g: &str, _: &str| g == "apps";
        let t =
            f.0.route("/apis/wardle.example.com/v1/flunders", local)
                .unwrap();
        assert_eq!((t.port, t.server_name().as_str()), (8443, "api.ns.svc"));
        assert_eq!(t.ca_bundle, b"----");
        assert!(f.0.route("/apis/wardle.example.com/v1", local).is_some());
        assert!(f.0.route("/apis/wardle.example.com", local).is_none());
        assert!(f.0.route("/apis/wardle.example.com/v2/x", local).is_none());
        // A built-in group cannot be taken over; a local APIService routes nothing.
        assert!(f.0.route("/apis/apps/v1/deployments", local).is_none());
        assert!(f.0.route("/apis/local.example.com/v1/x", local).is_none());
        assert!(f.0.route("/api/v1/pods", local).is_none());
        f.remove(
            "k1",
            &api_service("v1.wardle.example.com", "wardle.example.com", "v1", true),
        );
        assert!(f
            .0
            .route("/apis/wardle.example.com/v1/flunders", local)
            .is_none());
    }

    #[test]
    fn discovery_lists_checked_resources() {
        let f = Follow(Arc::new(Aggregator::default()));
        f.apply(
            "k",
            &api_service("v1.wardle.example.com", "wardle.example.com", "v1", true),
        );
        let none = |_: &str| false;
        let stale = f.0.discovery_v2(none);
        assert_eq!(stale[0]["versions"][0]["freshness"], "Stale");
        f.0.record(
            "v1.wardle.example.com",
            Checked::Passed(json!({"resources": [
                {"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder", "verbs": ["get", "list"]},
                {"name": "flunders/status", "singularName": "", "namespaced": true, "kind": "Flunder", "verbs": ["get"]}]})),
        );
        let v2 = f.0.discovery_v2(none);
        let r = &v2[0]["versions"][0]["resources"][0];
        assert_eq!(r["resource"], "flunders");
        assert_eq!(r["scope"], "Namespaced");
        assert_eq!(r["subresources"][0]["subresource"], "status");
        let groups = f.0.groups(none);
        assert_eq!(
            groups[0]["preferredVersion"]["groupVersion"],
            "wardle.example.com/v1"
        );
    }
}
