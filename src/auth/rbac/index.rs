//! The subject → rules index: the effective RBAC rules of a user in a namespace (upstream's
//! `RuleResolver.RulesFor`), for SelfSubjectRulesReview and the escalation check.
//!
//! Built from the same snapshot as the compiled policies and keyed by the same entities, so
//! it agrees with what the authorizer evaluates: a user's keys are its principal entity and
//! its groups. ClusterRoleBindings apply in every namespace; RoleBindings only in theirs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::EntityUid;
use k8s_openapi::api::authorization::v1::{NonResourceRule, ResourceRule};

use super::Rule;
use crate::auth::cedar::entities::Principal;
use crate::auth::UserInfo;

/// The rules one binding grants its subjects.
#[derive(Debug)]
pub struct Grant {
    pub binding: String,
    pub namespace: Option<String>,
    pub rules: Arc<Vec<Rule>>,
}

#[derive(Debug, Default)]
pub struct Index {
    by_subject: HashMap<EntityUid, Vec<Arc<Grant>>>,
}

impl Index {
    pub fn insert(&mut self, subjects: &[EntityUid], grant: Arc<Grant>) {
        for s in subjects {
            self.by_subject
                .entry(s.clone())
                .or_default()
                .push(grant.clone());
        }
    }

    /// Every rule `user` holds in `namespace` ("" = cluster-wide bindings only), in binding
    /// order, each binding's rules once.
    pub fn rules(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        let keys = Principal::of(user).subject_keys_for(user);
        let mut seen = HashSet::new();
        let mut grants: Vec<&Arc<Grant>> = keys
            .iter()
            .filter_map(|k| self.by_subject.get(k))
            .flatten()
            .filter(|g| match &g.namespace {
                None => true,
                Some(ns) => !namespace.is_empty() && ns == namespace,
            })
            .filter(|g| seen.insert(g.binding.clone()))
            .collect();
        grants.sort_by(|a, b| a.binding.cmp(&b.binding));
        grants
            .into_iter()
            .flat_map(|g| g.rules.iter().cloned())
            .collect()
    }

    /// The effective rules split as SelfSubjectRulesReview reports them.
    pub fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<ResourceRule>, Vec<NonResourceRule>) {
        split(self.rules(user, namespace))
    }
}

fn opt(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

/// Resource rules and non-resource rules, as upstream's `ConvertToResourceRules`.
pub fn split(rules: Vec<Rule>) -> (Vec<ResourceRule>, Vec<NonResourceRule>) {
    let mut res = Vec::new();
    let mut non = Vec::new();
    for r in rules {
        if !r.resources.is_empty() {
            res.push(ResourceRule {
                verbs: r.verbs.clone(),
                api_groups: opt(r.api_groups),
                resources: opt(r.resources),
                resource_names: opt(r.resource_names),
            });
        }
        if !r.non_resource_urls.is_empty() {
            non.push(NonResourceRule {
                verbs: r.verbs,
                non_resource_urls: opt(r.non_resource_urls),
            });
        }
    }
    (res, non)
}
