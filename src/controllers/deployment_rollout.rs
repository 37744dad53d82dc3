//! One sync of a Deployment, as upstream's `syncDeployment` with `sync.go`, `rolling.go`,
//! `recreate.go` and `progress.go`:
//!
//! - being deleted → status only; paused or a change of `spec.replicas` alone → scale the
//!   existing sets (proportionally when a rollout is under way), no new ReplicaSet;
//! - RollingUpdate: scale the new set up to `replicas + maxSurge` pods in total, then the old
//!   sets down while `replicas - maxUnavailable` pods stay available (unhealthy old pods go
//!   first); maxSurge rounds up, maxUnavailable down, and both 0 means maxUnavailable 1;
//! - Recreate: old sets to 0, wait until their pods are gone, then the new set to `replicas`;
//! - status: replicas, updated, ready, available, unavailable, observedGeneration, and the
//!   `Available` and `Progressing` conditions with upstream's reasons and messages
//!   (`NewReplicaSetCreated`, `FoundNewReplicaSet`, `ReplicaSetUpdated`,
//!   `NewReplicaSetAvailable`, `ProgressDeadlineExceeded`, `DeploymentPaused`,
//!   `DeploymentResumed`); an incomplete rollout is requeued for its progress deadline.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::deployment::{
    cleanup, new_replica_set, replicas, revision, scale, Ctx, ReconcileError, DESIRED_REPLICAS,
    REVISION,
};
use super::events::Kind;

fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default_pct: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s
                .trim_end_matches('%')
                .parse()
                .unwrap_or(i64::from(default_pct));
            let x = pct * i64::from(total);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
        None => {
            let x = i64::from(default_pct) * i64::from(total);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
    }
}

fn desired(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

fn recreate(d: &Deployment) -> bool {
    d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// (maxSurge, maxUnavailable) resolved against `spec.replicas`.
fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    if recreate(d) {
        return (0, 0);
    }
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let n = desired(d);
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), n, true, 25);
    let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), n, false, 25);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(n))
}

pub fn max_surge(d: &Deployment) -> i32 {
    surge_and_unavailable(d).0
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

pub struct Plan<'a> {
    ctx: &'a Ctx,
    d: &'a Deployment,
    ns: &'a str,
    sets: Vec<ReplicaSet>,
}

impl<'a> Plan<'a> {
    pub fn new(ctx: &'a Ctx, d: &'a Deployment, ns: &'a str, sets: Vec<ReplicaSet>) -> Self {
        Self { ctx, d, ns, sets }
    }

    fn split(&self, new: &Option<ReplicaSet>) -> Vec<ReplicaSet> {
        let new_uid = new.as_ref().and_then(|n| n.metadata.uid.clone());
        self.sets
            .iter()
            .filter(|rs| rs.metadata.uid != new_uid || new_uid.is_none())
            .cloned()
            .collect()
    }

    pub async fn sync(self) -> Result<Action, ReconcileError> {
        let d = self.d;
        let paused = d.spec.paused.unwrap_or(false);
        if d.metadata.deletion_timestamp.is_some() {
            let new = new_replica_set(self.ctx, d, self.ns, &self.sets, false, |_| 0).await?;
            let old = self.split(&new);
            return self.status(&new, &old, false).await;
        }
        let new = new_replica_set(self.ctx, d, self.ns, &self.sets, false, |_| 0).await?;
        let old = self.split(&new);
        if paused || self.is_scaling_event(&new, &old) {
            let changed = self.scale_sets(&new, &old).await?;
            if paused && new.as_ref().is_some_and(|n| replicas(n) == desired(d)) {
                cleanup(self.ctx, d, &old).await?;
            }
            return self.status(&new, &old, changed).await;
        }
        if recreate(d) {
            self.recreate(old).await
        } else {
            self.rolling(old).await
        }
    }

    /// Any active set whose desired-replicas annotation is not `spec.replicas`.
    fn is_scaling_event(&self, new: &Option<ReplicaSet>, old: &[ReplicaSet]) -> bool {
        let want = desired(self.d).to_string();
        new.iter()
            .chain(old.iter())
            .filter(|rs| replicas(rs) > 0)
            .any(|rs| {
                rs.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DESIRED_REPLICAS))
                    .is_some_and(|v| *v != want)
            })
    }

    /// Upstream's `scale`: the only active set (or the newest) takes `spec.replicas`; during a
    /// rollout, additions or removals are shared in proportion to the sets' sizes.
    async fn scale_sets(
        &self,
        new: &Option<ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<bool, ReconcileError> {
        let d = self.d;
        let want = desired(d);
        let mut all: Vec<&ReplicaSet> = new.iter().chain(old.iter()).collect();
        let active: Vec<&ReplicaSet> = all.iter().copied().filter(|rs| replicas(rs) > 0).collect();
        if active.len() <= 1 {
            let target = match active.first() {
                Some(rs) => Some(*rs),
                None => {
                    // None active: the newest takes them (upstream's FindActiveOrLatest).
                    all.sort_by_key(|rs| {
                        std::cmp::Reverse(
                            rs.metadata
                                .creation_timestamp
                                .as_ref()
                                .map(|t| t.0.as_second()),
                        )
                    });
                    new.as_ref().or(all.first().copied())
                }
            };
            return match target {
                Some(rs) => scale(self.ctx, d, rs, want).await,
                None => Ok(false),
            };
        }
        // Rolling update in progress: proportional scaling within maxSurge.
        let allowed = want + max_surge(d);
        let current: i32 = active.iter().map(|rs| replicas(rs)).sum();
        let mut to_add = allowed - current;
        let mut sizes: Vec<(&ReplicaSet, i32)> =
            active.iter().map(|rs| (*rs, replicas(rs))).collect();
        // Larger (and, on a tie, newer) sets first when growing; the other way when shrinking.
        sizes.sort_by_key(|(rs, n)| {
            let newer = rs
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            if to_add > 0 {
                (std::cmp::Reverse(*n), std::cmp::Reverse(newer))
            } else {
                (std::cmp::Reverse(*n), std::cmp::Reverse(-newer))
            }
        });
        if to_add != 0 && current > 0 {
            let total = to_add;
            for (_, n) in sizes.iter_mut() {
                let share = (i64::from(*n) * i64::from(total) / i64::from(current)) as i32;
                let share = if total > 0 {
                    share.min(to_add)
                } else {
                    share.max(to_add)
                };
                *n += share;
                to_add -= share;
            }
            if let Some((_, n)) = sizes.first_mut() {
                *n = (*n + to_add).max(0);
            }
        }
        let mut changed = false;
        for (rs, n) in sizes {
            changed |= scale(self.ctx, d, rs, n.max(0)).await?;
        }
        Ok(changed)
    }

    async fn rolling(self, old: Vec<ReplicaSet>) -> Result<Action, ReconcileError> {
        let d = self.d;
        let want = desired(d);
        let (surge, unavailable) = surge_and_unavailable(d);
        let old_total: i32 = old.iter().map(replicas).sum();
        let created_initial = move |_: &[ReplicaSet]| (want + surge - old_total).clamp(0, want);
        let new = new_replica_set(self.ctx, d, self.ns, &self.sets, true, created_initial).await?;
        let old = self.split(&new);
        let Some(new_rs) = new.clone() else {
            return Err(ReconcileError("no new replica set".into()));
        };
        // Scale up the new set within maxSurge.
        let new_n = replicas(&new_rs);
        let total: i32 = new_n + old.iter().map(replicas).sum::<i32>();
        let target = if new_n > want {
            want
        } else if new_n < want {
            let room = (want + surge - total).max(0);
            new_n + room.min(want - new_n)
        } else {
            new_n
        };
        if scale(self.ctx, d, &new_rs, target).await? && target > new_n {
            return self.status(&new, &old, true).await;
        }
        // Scale down old sets while keeping minAvailable.
        let mut changed = false;
        let old_pods: i32 = old.iter().map(replicas).sum();
        if old_pods > 0 {
            let all_pods = target + old_pods;
            let min_available = want - unavailable;
            let (_, _, new_available) = status_of(&new_rs);
            let new_unavailable = (target - new_available).max(0);
            let mut max_down = all_pods - min_available - new_unavailable;
            let mut oldest_first = old.clone();
            oldest_first.sort_by_key(|rs| {
                (
                    rs.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                    revision(rs),
                )
            });
            let mut sizes: Vec<i32> = oldest_first.iter().map(replicas).collect();
            // Unhealthy old pods first (upstream's cleanupUnhealthyReplicas).
            for (i, rs) in oldest_first.iter().enumerate() {
                if max_down <= 0 {
                    break;
                }
                let (_, _, avail) = status_of(rs);
                let unhealthy = (sizes[i] - avail).max(0);
                let n = unhealthy.min(max_down);
                sizes[i] -= n;
                max_down -= n;
            }
            // Then available ones while minAvailable holds.
            let available_now: i32 = oldest_first
                .iter()
                .zip(&sizes)
                .map(|(rs, n)| status_of(rs).2.min(*n))
                .sum::<i32>()
                + new_available;
            let mut can_remove = (available_now - min_available).max(0).min(max_down.max(0));
            for n in sizes.iter_mut() {
                if can_remove <= 0 {
                    break;
                }
                let k = (*n).min(can_remove);
                *n -= k;
                can_remove -= k;
            }
            for (rs, n) in oldest_first.iter().zip(sizes) {
                changed |= scale(self.ctx, d, rs, n).await?;
            }
        }
        if complete(d, &new_rs) {
            cleanup(self.ctx, d, &old).await?;
        }
        self.status(&new, &old, changed).await
    }

    async fn recreate(self, old: Vec<ReplicaSet>) -> Result<Action, ReconcileError> {
        let d = self.d;
        let mut changed = false;
        for rs in &old {
            changed |= scale(self.ctx, d, rs, 0).await?;
        }
        let new = new_replica_set(self.ctx, d, self.ns, &self.sets, false, |_| 0).await?;
        let running: i32 = old.iter().map(|rs| status_of(rs).0).sum();
        if changed || running > 0 {
            return self.status(&new, &old, changed).await;
        }
        let want = desired(d);
        let new = new_replica_set(self.ctx, d, self.ns, &self.sets, true, |_| want).await?;
        let old = self.split(&new);
        if let Some(rs) = &new {
            changed |= scale(self.ctx, d, rs, want).await?;
            if complete(d, rs) {
                cleanup(self.ctx, d, &old).await?;
            }
        }
        self.status(&new, &old, changed).await
    }

    /// Compute and write the status; requeue for the progress deadline or minReadySeconds.
    async fn status(
        &self,
        new: &Option<ReplicaSet>,
        old: &[ReplicaSet],
        progressed: bool,
    ) -> Result<Action, ReconcileError> {
        let d = self.d;
        let want = desired(d);
        let (_, unavailable_allowed) = surge_and_unavailable(d);
        let all: Vec<&ReplicaSet> = new.iter().chain(old.iter()).collect();
        let total: i32 = all.iter().map(|rs| status_of(rs).0).sum();
        let ready: i32 = all.iter().map(|rs| status_of(rs).1).sum();
        let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
        let updated = new.as_ref().map(|rs| status_of(rs).0).unwrap_or(0);
        let prev = d.status.clone().unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        let mut conditions = prev.conditions.clone().unwrap_or_default();
        let min_available = want - unavailable_allowed;
        let (a_status, a_reason, a_msg) = if available >= min_available {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        set_condition(
            &mut conditions,
            "Available",
            a_status,
            a_reason,
            a_msg.into(),
            &now,
        );
        let new_name = new
            .as_ref()
            .and_then(|rs| rs.metadata.name.clone())
            .unwrap_or_default();
        let paused = d.spec.paused.unwrap_or(false);
        let deadline = d.spec.progress_deadline_seconds;
        let is_complete = new.as_ref().is_some_and(|rs| complete(d, rs))
            && updated == want
            && available >= want
            && total == want;
        let mut requeue: Option<Duration> = None;
        let progressing = conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some("Progressing"))
            .cloned();
        if paused {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                &now,
            );
        } else if deadline.is_some() || progressing.is_none() {
            let was_paused =
                progressing.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused");
            let timed_out = progressing.as_ref().and_then(|c| c.reason.as_deref())
                == Some("ProgressDeadlineExceeded");
            let made_progress = progressed
                || updated > prev.updated_replicas.unwrap_or(0)
                || available > prev.available_replicas.unwrap_or(0)
                || prev.observed_generation != d.metadata.generation;
            if is_complete {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                    &now,
                );
            } else if was_paused {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                    &now,
                );
                requeue = deadline.map(|s| Duration::from_secs(s.max(0) as u64));
            } else if made_progress || progressing.is_none() {
                let (reason, msg) = match &progressing {
                    None => (
                        "NewReplicaSetCreated",
                        format!("Created new replica set \"{new_name}\""),
                    ),
                    Some(c)
                        if c.reason.as_deref() == Some("NewReplicaSetAvailable")
                            && new
                                .as_ref()
                                .is_some_and(|rs| replicas(rs) < want || total > want) =>
                    {
                        (
                            "ReplicaSetUpdated",
                            format!("ReplicaSet \"{new_name}\" is progressing."),
                        )
                    }
                    _ => (
                        "ReplicaSetUpdated",
                        format!("ReplicaSet \"{new_name}\" is progressing."),
                    ),
                };
                set_condition(&mut conditions, "Progressing", "True", reason, msg, &now);
                requeue = deadline.map(|s| Duration::from_secs(s.max(0) as u64));
            } else if !timed_out {
                // No progress: has the deadline passed since the last progress?
                let since = progressing
                    .as_ref()
                    .and_then(|c| c.last_update_time.as_ref().map(|t| t.0))
                    .unwrap_or(now.0);
                let limit = jiff::SignedDuration::from_secs(i64::from(deadline.unwrap_or(600)));
                if since + limit <= now.0 {
                    set_condition(
                        &mut conditions,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        &now,
                    );
                    if let Some(rs) = new {
                        self.ctx.recorder.record(
                            d,
                            Kind::Warning,
                            "ProgressDeadlineExceeded",
                            format!(
                                "Replica set \"{}\" has timed out progressing.",
                                rs.metadata.name.as_deref().unwrap_or_default()
                            ),
                        );
                    }
                } else {
                    let left = (since + limit).duration_since(now.0);
                    requeue = Some(
                        Duration::try_from(left).unwrap_or(Duration::from_secs(1))
                            + Duration::from_millis(200),
                    );
                }
            }
        }
        let status = DeploymentStatus {
            replicas: Some(total),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((want - available).max(0)),
            observed_generation: d.metadata.generation,
            collision_count: prev.collision_count,
            conditions: Some(conditions),
            terminating_replicas: prev.terminating_replicas,
        };
        let name = d.metadata.name.clone().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let rev = new.as_ref().map(revision).unwrap_or(0);
        let current_rev = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned();
        if rev > 0 && current_rev != Some(rev.to_string()) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        if !same_status(&prev, &status) {
            let patch = json!({"status": status});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(match requeue {
            Some(d) if !is_complete => Action::requeue(d),
            _ => Action::await_change(),
        })
    }
}

fn complete(d: &Deployment, new: &ReplicaSet) -> bool {
    let (n, _, avail) = status_of(new);
    let want = desired(d);
    replicas(new) == want && n == want && avail == want
}

/// Ignore timestamps that only moved because we rewrote an identical condition.
fn same_status(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let strip = |s: &DeploymentStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// Upstream's `SetDeploymentCondition`: lastTransitionTime only moves when the status does;
/// lastUpdateTime whenever reason or message change.
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
) {
    if let Some(c) = conditions
        .iter_mut()
        .find(|c| c.type_.as_deref() == Some(type_))
    {
        if c.status.as_deref() == Some(status)
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message.as_str())
        {
            // Progress refreshes lastUpdateTime even when nothing else changes.
            if reason == "ReplicaSetUpdated" {
                c.last_update_time = Some(now.clone());
            }
            return;
        }
        if c.status.as_deref() != Some(status) {
            c.last_transition_time = Some(now.clone());
        }
        c.status = Some(status.into());
        c.reason = Some(reason.into());
        c.message = Some(message);
        c.last_update_time = Some(now.clone());
        return;
    }
    conditions.push(DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    });
}
