//! ClusterRole aggregation, as upstream's `clusterrole-aggregation` controller: the `rules` of
//! every ClusterRole with an `aggregationRule` are the union of the rules of the ClusterRoles
//! its selectors match (itself excluded), selectors in order, matches sorted by name, each
//! distinct rule once. Aggregated roles may feed others (view → edit → admin): every write
//! is itself an event, so chains converge.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::watcher;

use super::Error;

const NAME: &str = "clusterrole-aggregation";
/// Events arriving within this window are handled by one pass.
const DEBOUNCE: Duration = Duration::from_millis(50);

pub async fn run(client: kube::Client) -> Result<(), Error> {
    let api: Api<ClusterRole> = Api::all(client);
    // A reflector keeps every ClusterRole in memory, so a pass reads no more than the watch
    // already delivered and writes only what changed.
    let (reader, writer) = reflector::store();
    let mut events = reflector(writer, watcher(api.clone(), watcher::Config::default())).boxed();
    loop {
        match events.next().await {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(controller = NAME, error = %e, "watch error");
                continue;
            }
            Some(Ok(_)) => {}
        }
        let pause = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                ev = events.next() => if ev.is_none() { break },
            }
        }
        for attempt in 0..3 {
            let mut all: Vec<ClusterRole> = reader.state().iter().map(|r| (**r).clone()).collect();
            all.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            match reconcile_all(&api, &all).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(controller = NAME, error = %e, attempt, "reconcile failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    Err(Error::Controller {
        name: NAME,
        detail: "the watch stream ended".into(),
    })
}

async fn reconcile_all(api: &Api<ClusterRole>, all: &[ClusterRole]) -> Result<(), kube::Error> {
    for role in all {
        let Some(rule) = &role.aggregation_rule else {
            continue;
        };
        let Some(name) = role.metadata.name.as_deref() else {
            continue;
        };
        let want = aggregate(
            name,
            rule.cluster_role_selectors.as_deref().unwrap_or(&[]),
            all,
        );
        if role.rules.as_deref().unwrap_or(&[]) == want.as_slice() {
            continue;
        }
        let patch = serde_json::json!({"rules": want});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// The aggregated rules for `name` (`all` sorted by name).
pub fn aggregate(name: &str, selectors: &[LabelSelector], all: &[ClusterRole]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for sel in selectors {
        for other in all {
            if other.metadata.name.as_deref() == Some(name) {
                continue;
            }
            let empty = BTreeMap::new();
            if !matches(sel, other.metadata.labels.as_ref().unwrap_or(&empty)) {
                continue;
            }
            for r in other.rules.iter().flatten() {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
    }
    out
}

/// metav1.LabelSelector semantics (an empty selector matches everything).
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};

    fn role(name: &str, label: Option<&str>, verb: &str) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|l| BTreeMap::from([(l.to_string(), "true".to_string())])),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                verbs: vec![verb.into()],
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["pods".into()]),
                ..Default::default()
            }]),
            aggregation_rule: None,
        }
    }

    #[test]
    fn aggregates_matching_roles_once_in_name_order() {
        let all = vec![
            role("a", Some("agg"), "get"),
            role("b", Some("agg"), "get"),
            role("c", Some("agg"), "list"),
            role("d", None, "delete"),
            role("self", Some("agg"), "watch"),
        ];
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("agg".to_string(), "true".to_string())])),
            ..Default::default()
        };
        let got = aggregate("self", &[sel], &all);
        let verbs: Vec<&str> = got.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, ["get", "list"]);
        let expr = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "agg".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
            ..Default::default()
        };
        let got = aggregate("self", &[expr], &all);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].verbs, ["delete"]);
    }
}
