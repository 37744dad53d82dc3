//! CRD status: `acceptedNames`, the `NamesAccepted` and `Established` conditions and
//! `storedVersions`.
//!
//! Upstream computes these asynchronously: the naming controller
//! (`controller/status/naming_controller.go`) reserves names and sets `NamesAccepted`, then the
//! establishing controller (`controller/establish`) flips `Established` to true once the
//! endpoint is served; `storedVersions` is maintained by the registry strategy. Rampart serves
//! a CRD as soon as its status is written, so [`conditions`] does both controller steps in one
//! go and `Established` goes straight to `True`/`InitialNamesAccepted`.
//!
//! Naming rules copied from upstream: a requested name is granted if it equals the name already
//! accepted for this CRD, or nobody in the same group holds it. Plural, singular and short names
//! share one namespace ("resources"); kind and listKind another ("kinds"). A conflicting name
//! keeps its previously accepted value, so a rename never takes a served CRD offline. The
//! condition reasons are upstream's (`PluralConflict`, `SingularConflict`, `ShortNamesConflict`,
//! `KindConflict`, `ListKindConflict`) with message `"<name>" is already in use`. Once
//! `Established` is `True` it stays so.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionCondition, CustomResourceDefinitionNames,
    CustomResourceDefinitionStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeSet;

pub const NAMES_ACCEPTED: &str = "NamesAccepted";
pub const ESTABLISHED: &str = "Established";

/// Names already claimed in one API group, by other CRDs or by built-in resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakenNames {
    /// Plurals, singulars and short names.
    pub resources: BTreeSet<String>,
    /// Kinds and list kinds.
    pub kinds: BTreeSet<String>,
}

impl TakenNames {
    /// The accepted names of every CRD in `crds` whose group is `group`. Including the CRD being
    /// reconciled is fine (and is what upstream does): its own accepted names never conflict.
    pub fn for_group<'a>(
        group: &str,
        crds: impl IntoIterator<Item = &'a CustomResourceDefinition>,
    ) -> Self {
        let mut taken = TakenNames::default();
        for crd in crds.into_iter().filter(|c| c.spec.group == group) {
            let Some(names) = crd.status.as_ref().and_then(|s| s.accepted_names.as_ref()) else {
                continue;
            };
            taken.resources.insert(names.plural.clone());
            taken.resources.extend(names.singular.iter().cloned());
            taken
                .resources
                .extend(names.short_names.iter().flatten().cloned());
            taken.kinds.insert(names.kind.clone());
            taken.kinds.extend(names.list_kind.iter().cloned());
        }
        taken.resources.remove("");
        taken.kinds.remove("");
        taken
    }

    /// Reserves a built-in resource of the same group (e.g. `networkpolicies`/`NetworkPolicy`
    /// for a CRD in `networking.k8s.io`), so a CRD cannot shadow it.
    pub fn add_builtin(&mut self, plural: &str, singular: &str, kind: &str) {
        self.resources.insert(plural.to_string());
        if !singular.is_empty() {
            self.resources.insert(singular.to_string());
        }
        self.kinds.insert(kind.to_string());
        self.kinds.insert(format!("{kind}List"));
    }
}

fn granted(requested: &str, accepted: &str, taken: &BTreeSet<String>) -> Result<(), String> {
    if requested == accepted || !taken.contains(requested) {
        Ok(())
    } else {
        Err(format!("{requested:?} is already in use"))
    }
}

/// Computes the CRD's conditions (its existing ones with `NamesAccepted` and `Established`
/// updated) and its new `status.acceptedNames`.
///
/// `lastTransitionTime` is set to `now` only for conditions whose status changes.
pub fn conditions(
    crd: &CustomResourceDefinition,
    taken: &TakenNames,
    now: jiff::Timestamp,
) -> (
    Vec<CustomResourceDefinitionCondition>,
    CustomResourceDefinitionNames,
) {
    let requested = &crd.spec.names;
    let status = crd.status.clone().unwrap_or_default();
    let accepted = status.accepted_names.clone().unwrap_or_default();
    let mut names = accepted.clone();
    let mut conflict: Option<(&str, String)> = None;

    match granted(&requested.plural, &accepted.plural, &taken.resources) {
        Ok(()) => names.plural = requested.plural.clone(),
        Err(e) => conflict = Some(("PluralConflict", e)),
    }
    let req_singular = requested.singular.clone().unwrap_or_default();
    match granted(
        &req_singular,
        accepted.singular.as_deref().unwrap_or(""),
        &taken.resources,
    ) {
        Ok(()) => names.singular = requested.singular.clone(),
        Err(e) => conflict = Some(("SingularConflict", e)),
    }
    if requested.short_names != accepted.short_names {
        let mine: BTreeSet<&String> = accepted.short_names.iter().flatten().collect();
        let errs: Vec<String> = requested
            .short_names
            .iter()
            .flatten()
            // Our own accepted plural/singular are in `taken` too; they must not block us.
            .filter(|s| {
                !mine.contains(s)
                    && **s != accepted.plural
                    && Some(*s) != accepted.singular.as_ref()
            })
            .filter_map(|s| granted(s, "", &taken.resources).err())
            .collect();
        if errs.is_empty() {
            names.short_names = requested.short_names.clone();
        } else {
            let msg = if errs.len() == 1 {
                errs[0].clone()
            } else {
                format!("[{}]", errs.join(", "))
            };
            conflict = Some(("ShortNamesConflict", msg));
        }
    }
    match granted(&requested.kind, &accepted.kind, &taken.kinds) {
        Ok(()) => names.kind = requested.kind.clone(),
        Err(e) => conflict = Some(("KindConflict", e)),
    }
    let req_list_kind = requested.list_kind.clone().unwrap_or_default();
    match granted(
        &req_list_kind,
        accepted.list_kind.as_deref().unwrap_or(""),
        &taken.kinds,
    ) {
        Ok(()) => names.list_kind = requested.list_kind.clone(),
        Err(e) => conflict = Some(("ListKindConflict", e)),
    }
    names.categories = requested.categories.clone();

    let generation = crd.metadata.generation;
    let names_accepted = match conflict {
        None => condition(
            NAMES_ACCEPTED,
            "True",
            "NoConflicts",
            "no conflicts found",
            generation,
        ),
        Some((reason, msg)) => condition(NAMES_ACCEPTED, "False", reason, &msg, generation),
    };
    let was_established = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == ESTABLISHED && c.status == "True");
    let established = if was_established || names_accepted.status == "True" {
        condition(
            ESTABLISHED,
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
            generation,
        )
    } else {
        condition(
            ESTABLISHED,
            "False",
            "NotAccepted",
            "not all names are accepted",
            generation,
        )
    };

    let mut all = status.conditions.unwrap_or_default();
    set_condition(&mut all, names_accepted, now);
    set_condition(&mut all, established, now);
    (all, names)
}

/// `status.storedVersions`: the recorded ones plus the current storage version, appended if new
/// (upstream's strategy `PrepareForCreate`/`PrepareForUpdate`). Old entries are only ever removed
/// by a client after a storage migration.
pub fn stored_versions(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut stored = crd
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default();
    if let Some(v) = crd.spec.versions.iter().find(|v| v.storage) {
        if !stored.contains(&v.name) {
            stored.push(v.name.clone());
        }
    }
    stored
}

/// Writes [`conditions`], accepted names, [`stored_versions`] and `observedGeneration` into
/// `crd.status`. Call after a successful create/update of the CRD, and for every CRD of the
/// group when one is deleted (names may have been freed).
pub fn reconcile_status(
    crd: &mut CustomResourceDefinition,
    taken: &TakenNames,
    now: jiff::Timestamp,
) {
    let (conds, names) = conditions(crd, taken, now);
    let stored = stored_versions(crd);
    let status = crd
        .status
        .get_or_insert_with(CustomResourceDefinitionStatus::default);
    status.conditions = Some(conds);
    status.accepted_names = Some(names);
    status.stored_versions = Some(stored);
    status.observed_generation = crd.metadata.generation;
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> CustomResourceDefinitionCondition {
    CustomResourceDefinitionCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_transition_time: None,
        observed_generation: generation,
    }
}

/// Upstream `SetCRDCondition`: replace in place, keeping `lastTransitionTime` unless the status flips.
fn set_condition(
    all: &mut Vec<CustomResourceDefinitionCondition>,
    mut new: CustomResourceDefinitionCondition,
    now: jiff::Timestamp,
) {
    match all.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            new.last_transition_time = if existing.status == new.status {
                existing.last_transition_time.clone().or(Some(Time(now)))
            } else {
                Some(Time(now))
            };
            *existing = new;
        }
        None => {
            new.last_transition_time = Some(Time(now));
            all.push(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::crontab;
    use super::*;

    fn t(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).expect("valid test timestamp")
    }

    fn find<'a>(
        c: &'a [CustomResourceDefinitionCondition],
        ty: &str,
    ) -> &'a CustomResourceDefinitionCondition {
        c.iter().find(|c| c.type_ == ty).expect("condition present")
    }

    #[test]
    fn fresh_crd_is_accepted_and_established() {
        let mut crd = crontab();
        reconcile_status(&mut crd, &TakenNames::default(), t(100));
        let status = crd.status.as_ref().expect("status set");
        let conds = status.conditions.as_deref().unwrap_or_default();
        let na = find(conds, NAMES_ACCEPTED);
        assert_eq!(
            (na.status.as_str(), na.reason.as_deref()),
            ("True", Some("NoConflicts"))
        );
        let est = find(conds, ESTABLISHED);
        assert_eq!(
            (est.status.as_str(), est.reason.as_deref()),
            ("True", Some("InitialNamesAccepted"))
        );
        assert_eq!(est.last_transition_time, Some(Time(t(100))));
        assert_eq!(status.accepted_names.as_ref(), Some(&crd.spec.names));
        assert_eq!(
            status.stored_versions.as_deref(),
            Some(&["v1".to_string()][..])
        );
    }

    #[test]
    fn collisions() {
        type Setup = Box<dyn Fn(&mut TakenNames)>;
        type Case = (&'static str, Setup, Option<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            ("no collision", Box::new(|_| {}), None),
            (
                "plural",
                Box::new(|t| {
                    t.resources.insert("crontabs".into());
                }),
                Some(("PluralConflict", "\"crontabs\" is already in use")),
            ),
            (
                "singular",
                Box::new(|t| {
                    t.resources.insert("crontab".into());
                }),
                Some(("SingularConflict", "\"crontab\" is already in use")),
            ),
            (
                "short name",
                Box::new(|t| {
                    t.resources.insert("ct".into());
                }),
                Some(("ShortNamesConflict", "\"ct\" is already in use")),
            ),
            (
                "kind",
                Box::new(|t| {
                    t.kinds.insert("CronTab".into());
                }),
                Some(("KindConflict", "\"CronTab\" is already in use")),
            ),
            (
                "built-in list kind",
                Box::new(|t| t.add_builtin("other", "", "CronTab")),
                Some(("ListKindConflict", "\"CronTabList\" is already in use")),
            ),
        ];
        for (name, setup, want) in cases {
            let mut taken = TakenNames::default();
            setup(&mut taken);
            let crd = crontab();
            let (conds, names) = conditions(&crd, &taken, t(5));
            let na = find(&conds, NAMES_ACCEPTED);
            let est = find(&conds, ESTABLISHED);
            match want {
                None => {
                    assert_eq!(na.status, "True", "{name}");
                    assert_eq!(names, crd.spec.names, "{name}");
                }
                Some((reason, msg)) => {
                    assert_eq!(na.status, "False", "{name}");
                    assert_eq!(na.reason.as_deref(), Some(reason), "{name}");
                    assert_eq!(na.message.as_deref(), Some(msg), "{name}");
                    assert_eq!(est.status, "False", "{name}");
                    assert_eq!(est.reason.as_deref(), Some("NotAccepted"), "{name}");
                    assert_ne!(
                        names, crd.spec.names,
                        "{name}: conflicting name must not be accepted"
                    );
                }
            }
        }
    }

    #[test]
    fn taken_names_come_from_same_group_only() {
        let mut other = crontab();
        reconcile_status(&mut other, &TakenNames::default(), t(1));
        let mut foreign = other.clone();
        foreign.spec.group = "other.example.com".into();
        let taken = TakenNames::for_group("stable.example.com", [&other, &foreign]);
        assert!(taken.resources.contains("crontabs") && taken.resources.contains("ct"));
        assert!(taken.kinds.contains("CronTabList"));
        assert!(
            TakenNames::for_group("nobody.example.com", [&other, &foreign])
                .resources
                .is_empty()
        );

        // A second CRD in the group asking for the same plural is refused...
        let mut second = crontab();
        second.metadata.name = Some("crontabs2.stable.example.com".into());
        let (conds, _) = conditions(&second, &taken, t(2));
        assert_eq!(find(&conds, NAMES_ACCEPTED).status, "False");
        // ...while the owner itself, reconciled again, keeps its names and transition times.
        let (conds, _) = conditions(&other, &taken, t(3));
        let na = find(&conds, NAMES_ACCEPTED);
        assert_eq!(na.status, "True");
        assert_eq!(na.last_transition_time, Some(Time(t(1))));
    }

    #[test]
    fn established_sticks_and_renames_keep_old_names() {
        let mut crd = crontab();
        reconcile_status(&mut crd, &TakenNames::default(), t(1));
        crd.spec.names.plural = "crons".into();
        let mut taken = TakenNames::default();
        taken.resources.insert("crons".into());
        reconcile_status(&mut crd, &taken, t(2));
        let status = crd.status.as_ref().expect("status");
        let conds = status.conditions.as_deref().unwrap_or_default();
        assert_eq!(find(conds, NAMES_ACCEPTED).status, "False");
        assert_eq!(
            find(conds, NAMES_ACCEPTED).last_transition_time,
            Some(Time(t(2)))
        );
        assert_eq!(find(conds, ESTABLISHED).status, "True");
        assert_eq!(
            status.accepted_names.as_ref().map(|n| n.plural.as_str()),
            Some("crontabs")
        );
    }

    #[test]
    fn stored_versions_append_new_storage_version() {
        let mut crd = crontab();
        reconcile_status(&mut crd, &TakenNames::default(), t(1));
        let mut v2 = crd.spec.versions[0].clone();
        v2.name = "v2".into();
        crd.spec.versions[0].storage = false;
        crd.spec.versions.push(v2);
        assert_eq!(
            stored_versions(&crd),
            vec!["v1".to_string(), "v2".to_string()]
        );
    }
}
