//! Selector and toleration semantics (the scheduler and the node lifecycle controller): label
//! selectors (`matchLabels` + `matchExpressions`), node selector terms (`In`, `NotIn`,
//! `Exists`, `DoesNotExist`, `Gt`, `Lt`, `matchFields` on `metadata.name`) and taint
//! toleration, as upstream's `labels.Selector`, `nodeaffinity` and `v1helper` do.
//!
//! Invariant: malformed input never panics; it simply does not match (upstream treats an
//! unparsable selector as matching nothing for affinity, and validation keeps most of it out).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// Does a metav1 LabelSelector match `labels`? `None` (no selector) matches nothing, as
/// upstream's affinity terms and spread constraints treat it; an empty selector matches all.
pub fn label_selector(sel: Option<&LabelSelector>, labels: &Labels) -> bool {
    let Some(sel) = sel else {
        return false;
    };
    if let Some(ml) = &sel.match_labels {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => got.is_none_or(|v| !values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    })
}

fn node_requirement(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt take exactly one integer value and compare the label as an integer.
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(|v| v.parse::<i64>().ok()), values) else {
                return false;
            };
            let Ok(bound) = bound.parse::<i64>() else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// A NodeSelector: the terms are ORed, each term's requirements ANDed; a term with no
/// requirements matches nothing (upstream's rule).
pub fn node_selector(sel: &NodeSelector, node_name: &str, labels: &Labels) -> bool {
    sel.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or_default();
        let fields = t.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        let name = node_name.to_string();
        exprs
            .iter()
            .all(|r| node_requirement(r, labels.get(&r.key)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && node_requirement(r, Some(&name)))
    })
}

/// Does `t` tolerate `taint`? (upstream `Toleration.ToleratesTaint`)
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => true,
        "" | "Equal" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSelectorTerm;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "1")]);
        assert!(!label_selector(None, &l));
        assert!(label_selector(Some(&LabelSelector::default()), &l));
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["2".into()]),
            }]),
        };
        assert!(label_selector(Some(&sel), &l));
        assert!(!label_selector(Some(&sel), &labels(&[("app", "db")])));
    }

    #[test]
    fn node_selector_terms() {
        let term = |op: &str, vals: &[&str]| NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "n".into(),
                operator: op.into(),
                values: Some(vals.iter().map(|s| s.to_string()).collect()),
            }]),
            match_fields: None,
        };
        let sel = |t| NodeSelector {
            node_selector_terms: vec![t],
        };
        let l = labels(&[("n", "5")]);
        assert!(node_selector(&sel(term("Gt", &["4"])), "x", &l));
        assert!(!node_selector(&sel(term("Lt", &["4"])), "x", &l));
        assert!(!node_selector(&sel(term("Gt", &["nope"])), "x", &l));
        assert!(node_selector(&sel(term("In", &["5", "6"])), "x", &l));
        assert!(!node_selector(&sel(NodeSelectorTerm::default()), "x", &l));
    }

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("x".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let tol = |k: &str, op: &str, v: &str, e: &str| Toleration {
            key: Some(k.into()),
            operator: Some(op.into()),
            value: Some(v.into()),
            effect: Some(e.into()),
            toleration_seconds: None,
        };
        assert!(tolerates(&tol("dedicated", "Equal", "x", ""), &taint));
        assert!(!tolerates(&tol("dedicated", "Equal", "y", ""), &taint));
        assert!(tolerates(&tol("", "Exists", "", ""), &taint));
        assert!(!tolerates(
            &tol("dedicated", "Exists", "", "NoExecute"),
            &taint
        ));
        assert!(untolerated(std::slice::from_ref(&taint), &[], &["NoSchedule"]).is_some());
        assert!(untolerated(std::slice::from_ref(&taint), &[], &["NoExecute"]).is_none());
    }
}
