//! The Job controller, as upstream's `job` controller: runs pods until `completions` of them
//! succeed, at most `parallelism` at a time, and reports it in the Job's status.
//!
//! - NonIndexed: any `completions` successes finish the Job. Indexed: each index in
//!   `0..completions` must succeed once; pods are named `<job>-<index>-` and carry the index in
//!   the `batch.kubernetes.io/job-completion-index` annotation and label and the
//!   `JOB_COMPLETION_INDEX` environment variable (from that annotation), and
//!   `status.completedIndexes` lists the finished ones as upstream's interval string ("0-2,4").
//! - Failures: failed pods count against `backoffLimit` (`BackoffLimitExceeded`), unless the
//!   `podFailurePolicy` matches them first (rules in order; `FailJob` fails the Job with reason
//!   `PodFailurePolicy`, `Ignore` does not count, `Count` counts; `onExitCodes` and
//!   `onPodConditions`); `activeDeadlineSeconds` from `status.startTime` fails it with
//!   `DeadlineExceeded`. Replacements of failed pods wait 10 s doubling up to 6 min, as upstream.
//! - Finishing: `SuccessCriteriaMet`/`FailureTarget` first, then (once no pod is active)
//!   `Complete`/`Failed` with `completionTime`, as upstream since 1.31; active pods of a failed
//!   Job are deleted.
//! - Indexed Jobs: `backoffLimitPerIndex`/`maxFailedIndexes` (`status.failedIndexes`) and
//!   `successPolicy` (`SuccessCriteriaMet` with reason `SuccessPolicy`), in `job_indexes.rs`.
//! - `suspend: true` deletes active pods and sets `Suspended`; resuming resets `startTime`.
//! - `ttlSecondsAfterFinished`: a finished Job is deleted (Background propagation) that long
//!   after it finished (upstream's ttl-after-finished controller, folded in here).
//!
//! Pods are counted from the shared pod cache (pods controlled by the Job). Upstream also
//! counts pods deleted after they finished, through the `batch.kubernetes.io/job-tracking`
//! finalizer; here a finished pod that is deleted before the Job finishes is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use serde_json::json;

use super::events::{Kind, Recorder};
use super::informers::Informer;
use super::job_indexes::{self, PerIndex};
use super::replicaset::{controller_of, is_active, owners_of, ready_since, Expectations};
use super::Error;

const NAME: &str = "job-controller";
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.to_string())
    }
}

struct Ctx {
    client: kube::Client,
    pods: kube::runtime::reflector::Store<Pod>,
    expectations: Expectations,
    recorder: Recorder,
}

pub fn run(
    client: kube::Client,
    jobs: &Informer<Job>,
    pods: &Informer<Pod>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    // kube-runtime's applier waits for its store with a wait that wakes one waiter only;
    // waiting here first makes that wait return at once.
    let main_ready = jobs.ready();
    let pods_ready = pods.ready();
    let store = jobs.store();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        pods: pods.store(),
        expectations: Expectations::default(),
    });
    let controller = Controller::for_stream(jobs.triggers(), store.clone()).reconcile_on(
        pods.related(move |pod: &Pod| {
            // Only pods a Job controls (orphans are not adopted by Jobs here).
            if controller_of(&pod.metadata).is_none() {
                return Vec::new();
            }
            owners_of(pod, &store, "Job", |_: &Job| None::<Selector>)
        }),
    );
    async move {
        // Decide nothing before the caches hold a full list: a half-filled cache would look
        // like missing objects.
        pods_ready.await;
        main_ready.await;
        tracing::info!(controller = NAME, "caches synced, controller started");
        controller
            .run(reconcile, error_policy, ctx)
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(controller = NAME, error = %e, "reconcile failed");
                }
            })
            .await;
        Err(Error::Controller {
            name: NAME,
            detail: "the controller stream ended".into(),
        })
    }
}

fn error_policy(_: Arc<Job>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(1))
}

fn condition_true(status: &JobStatus, type_: &str) -> Option<JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn index_of(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_KEY))
        .or_else(|| p.metadata.labels.as_ref().and_then(|l| l.get(INDEX_KEY)))
        .and_then(|v| v.parse().ok())
}

/// Upstream's completedIndexes format: sorted, runs collapsed ("0-2,4").
pub fn interval_string(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// What a pod failure policy says about one failed pod.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    FailJob(String),
    /// Fail the pod's index at once (Indexed Jobs with `backoffLimitPerIndex`).
    FailIndex,
    Ignore,
    Count,
}

pub fn judge(rules: &[PodFailurePolicyRule], pod: &Pod) -> Verdict {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(req) = &rule.on_exit_codes {
            for cs in &statuses {
                if req.container_name.as_deref().is_some_and(|n| n != cs.name) {
                    continue;
                }
                let Some(code) = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                let inside = req.values.contains(&code);
                if (req.operator == "In") == inside {
                    matched = Some(format!(
                        "Container {} for pod {ns}/{pod_name} failed with exit code {code} matching {} rule at index {i}",
                        cs.name, rule.action
                    ));
                    break;
                }
            }
        }
        for pat in rule.on_pod_conditions.iter().flatten() {
            let hit = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == pat.type_
                            && c.status == pat.status.clone().unwrap_or_else(|| "True".into())
                    })
                });
            if hit {
                matched = Some(format!(
                    "Pod {ns}/{pod_name} has condition {} matching {} rule at index {i}",
                    pat.type_, rule.action
                ));
            }
        }
        if let Some(msg) = matched {
            return match rule.action.as_str() {
                "FailJob" => Verdict::FailJob(msg),
                "FailIndex" => Verdict::FailIndex,
                "Ignore" => Verdict::Ignore,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// When a failed pod failed: its latest condition transition, else its creation.
fn failure_time(p: &Pod) -> Option<jiff::Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .filter_map(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
                .max()
        })
        .or(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn set_condition(status: &mut JobStatus, type_: &str, value: &str, reason: &str, message: &str) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status == value && c.reason.as_deref() == Some(reason) {
            // Unchanged: rewriting the times would make every sync a write (and a new sync).
            return;
        }
        if c.status != value {
            c.last_transition_time = Some(now());
        }
        c.status = value.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(now());
        return;
    }
    conditions.push(JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now()),
        last_transition_time: Some(now()),
    });
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(name), Some(uid), Some(spec)) = (
        job.metadata.namespace.clone(),
        job.metadata.name.clone(),
        job.metadata.uid.clone(),
        job.spec.as_ref(),
    ) else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let prev = job.status.clone().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // Finished: only the TTL is left to do.
    let finished = condition_true(&prev, "Complete").or_else(|| condition_true(&prev, "Failed"));
    if let Some(c) = finished {
        let Some(ttl) = spec.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let at = c
            .last_transition_time
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now)
            + jiff::SignedDuration::from_secs(i64::from(ttl.max(0)));
        let left = at.duration_since(jiff::Timestamp::now());
        if left.is_positive() {
            return Ok(Action::requeue(
                Duration::try_from(left).unwrap_or(Duration::from_secs(1))
                    + Duration::from_millis(100),
            ));
        }
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }

    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| controller_of(&p.metadata).is_some_and(|c| c.uid == uid))
        .collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
    let succeeded_pods: Vec<&Arc<Pod>> = pods.iter().filter(|p| phase(p) == "Succeeded").collect();
    let failed_pods: Vec<&Arc<Pod>> = pods.iter().filter(|p| phase(p) == "Failed").collect();
    let rules = spec
        .pod_failure_policy
        .as_ref()
        .map(|p| p.rules.clone())
        .unwrap_or_default();
    let mut fail_reason: Option<(String, String)> = None;
    let mut counted_failures = 0i32;
    let mut last_failure: Option<jiff::Timestamp> = None;
    // backoffLimitPerIndex: failures are counted per index instead (job_indexes.rs).
    let per_index_limit = spec.backoff_limit_per_index.filter(|_| indexed);
    let mut per_index = PerIndex::default();
    let mut last_failure_of: BTreeMap<i32, jiff::Timestamp> = BTreeMap::new();
    for p in &failed_pods {
        let verdict = judge(&rules, p);
        if let (Some(limit), Some(i)) = (per_index_limit, index_of(p)) {
            let counted = verdict == Verdict::Count;
            per_index.failure(i, counted, verdict == Verdict::FailIndex, limit);
            if counted {
                if let Some(t) = failure_time(p) {
                    let e = last_failure_of.entry(i).or_insert(t);
                    *e = (*e).max(t);
                }
            }
            if let Verdict::FailJob(msg) = verdict {
                fail_reason.get_or_insert(("PodFailurePolicy".into(), msg));
            }
            continue;
        }
        match verdict {
            Verdict::FailJob(msg) => {
                fail_reason.get_or_insert(("PodFailurePolicy".into(), msg));
            }
            Verdict::Ignore => {}
            Verdict::Count | Verdict::FailIndex => {
                counted_failures += 1;
                last_failure = last_failure.max(failure_time(p));
            }
        }
    }
    let completed: BTreeSet<i32> = if indexed {
        succeeded_pods
            .iter()
            .filter_map(|p| index_of(p))
            .filter(|i| completions.is_none_or(|c| *i < c))
            .collect()
    } else {
        BTreeSet::new()
    };
    let succeeded = if indexed {
        completed.len() as i32
    } else {
        succeeded_pods.len() as i32
    };
    let mut status = prev.clone();
    if status.start_time.is_none() && !spec.suspend.unwrap_or(false) {
        status.start_time = Some(now());
    }
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    if let (Some(max), None) = (
        spec.max_failed_indexes
            .filter(|_| per_index_limit.is_some()),
        &fail_reason,
    ) {
        if per_index.failed.len() > max.max(0) as usize {
            fail_reason = Some((
                job_indexes::REASON_MAX_FAILED_INDEXES.into(),
                job_indexes::MESSAGE_MAX_FAILED_INDEXES.into(),
            ));
        }
    }
    // With a success policy met, the Job succeeds whatever else is left (upstream).
    let success_rule = spec
        .success_policy
        .as_ref()
        .filter(|_| indexed)
        .and_then(|p| job_indexes::success_rule_met(p, &completed, completions.unwrap_or(0)));
    if let (Some(c), None, None) = (completions, &fail_reason, success_rule) {
        let resolved = (0..c).all(|i| completed.contains(&i) || per_index.failed.contains(&i));
        if per_index_limit.is_some() && !per_index.failed.is_empty() && resolved {
            fail_reason = Some((
                job_indexes::REASON_FAILED_INDEXES.into(),
                job_indexes::MESSAGE_FAILED_INDEXES.into(),
            ));
        }
    }
    if fail_reason.is_none() && per_index_limit.is_none() && counted_failures > backoff_limit {
        fail_reason = Some((
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into(),
        ));
    }
    let mut requeue: Option<Duration> = None;
    if let (None, Some(deadline), Some(start)) = (
        &fail_reason,
        spec.active_deadline_seconds,
        status.start_time.as_ref(),
    ) {
        let end = start.0 + jiff::SignedDuration::from_secs(deadline);
        let left = end.duration_since(jiff::Timestamp::now());
        if left.is_positive() {
            requeue = Some(
                Duration::try_from(left).unwrap_or(Duration::from_secs(1))
                    + Duration::from_millis(100),
            );
        } else {
            fail_reason = Some((
                "DeadlineExceeded".into(),
                "Job was active longer than specified deadline".into(),
            ));
        }
    }
    let complete = success_rule.is_some()
        || match completions {
            Some(c) => succeeded >= c,
            // No completions: done once any pod succeeded and none is active.
            None => succeeded > 0 && active.is_empty(),
        };
    let (done_reason, done_message) = match success_rule {
        Some(i) => (
            job_indexes::REASON_SUCCESS_POLICY.to_string(),
            format!("Matched rules at index {i}"),
        ),
        None => (
            "CompletionsReached".to_string(),
            "Reached expected number of succeeded pods".to_string(),
        ),
    };
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let suspended = spec.suspend.unwrap_or(false);
    let mut active_count = active.len() as i32;

    if fail_reason.is_some() || complete || suspended {
        // Stop what runs: failed or suspended Jobs delete active pods (completed Jobs with
        // completions reached do too, as upstream removes the surplus).
        for p in &active {
            if let Some(pn) = p.metadata.name.as_deref() {
                match pod_api.delete(pn, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Some((reason, message)) = &fail_reason {
            set_condition(&mut status, "FailureTarget", "True", reason, message);
            set_condition(&mut status, "Failed", "True", reason, message);
            ctx.recorder
                .record(&*job, Kind::Warning, reason, message.clone());
            status.completion_time = None;
            active_count = 0;
        } else if complete {
            set_condition(
                &mut status,
                "SuccessCriteriaMet",
                "True",
                &done_reason,
                &done_message,
            );
            set_condition(&mut status, "Complete", "True", &done_reason, &done_message);
            status.completion_time = Some(now());
            ctx.recorder
                .record(&*job, Kind::Normal, "Completed", "Job completed".into());
            active_count = 0;
        } else if suspended {
            if condition_true(&prev, "Suspended").is_none() {
                ctx.recorder
                    .record(&*job, Kind::Normal, "Suspended", "Job suspended".into());
            }
            set_condition(
                &mut status,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
            );
            status.start_time = None;
            active_count = 0;
        }
    } else {
        if condition_true(&prev, "Suspended").is_some() {
            set_condition(
                &mut status,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
            );
            ctx.recorder
                .record(&*job, Kind::Normal, "Resumed", "Job resumed".into());
            status.start_time = Some(now());
        }
        if ctx.expectations_satisfied(&uid, &pods) {
            // Back-off after failures: 10 s doubling, at most 6 minutes.
            let wait = if counted_failures > 0 {
                let delay = jiff::SignedDuration::from_secs(
                    (10i64 << (counted_failures - 1).min(6)).min(360),
                );
                last_failure.map(|t| (t + delay).duration_since(jiff::Timestamp::now()))
            } else {
                None
            };
            match wait {
                Some(w) if w.is_positive() => {
                    let d = Duration::try_from(w).unwrap_or(Duration::from_secs(1))
                        + Duration::from_millis(100);
                    requeue = Some(requeue.map_or(d, |r| r.min(d)));
                }
                _ => {
                    let want = if indexed {
                        let running: BTreeSet<i32> =
                            active.iter().filter_map(|p| index_of(p)).collect();
                        let total = completions.unwrap_or(parallelism);
                        let room = (parallelism - active.len() as i32).max(0) as usize;
                        let now = jiff::Timestamp::now();
                        let mut ready_at = |i: &i32| {
                            // Per-index back-off: 10 s doubling per failure of this index.
                            let n = per_index.count(*i);
                            let Some(last) = last_failure_of.get(i).filter(|_| n > 0) else {
                                return true;
                            };
                            let delay =
                                jiff::SignedDuration::from_secs((10i64 << (n - 1).min(6)).min(360));
                            let w = (*last + delay).duration_since(now);
                            if w.is_positive() {
                                let d = Duration::try_from(w).unwrap_or(Duration::from_secs(1))
                                    + Duration::from_millis(100);
                                requeue = Some(requeue.map_or(d, |r| r.min(d)));
                                return false;
                            }
                            true
                        };
                        (0..total)
                            .filter(|i| {
                                !completed.contains(i)
                                    && !running.contains(i)
                                    && !per_index.failed.contains(i)
                            })
                            .filter(|i| ready_at(i))
                            .take(room)
                            .map(Some)
                            .collect::<Vec<_>>()
                    } else {
                        let remaining = completions.map_or(parallelism, |c| (c - succeeded).max(0));
                        let target = parallelism.min(remaining);
                        let n = (target - active.len() as i32).max(0) as usize;
                        // No completions: once one succeeded, no new pods.
                        let n = if completions.is_none() && succeeded > 0 {
                            0
                        } else {
                            n
                        };
                        vec![None; n]
                    };
                    let mut created = Vec::new();
                    for index in want {
                        let mut pod = new_pod(&job, &name, &uid, index);
                        if let (Some(i), Some(_)) = (index, per_index_limit) {
                            pod.metadata
                                .annotations
                                .get_or_insert_with(Default::default)
                                .insert(
                                    job_indexes::FAILURE_COUNT_KEY.into(),
                                    per_index.count(i).to_string(),
                                );
                        }
                        match pod_api.create(&PostParams::default(), &pod).await {
                            Ok(p) => {
                                let pn = p.metadata.name.clone().unwrap_or_default();
                                ctx.recorder.record(
                                    &*job,
                                    Kind::Normal,
                                    "SuccessfulCreate",
                                    format!("Created pod: {pn}"),
                                );
                                created.push(pn);
                                active_count += 1;
                            }
                            Err(e) => {
                                let msg = match &e {
                                    kube::Error::Api(s) => s.message.clone(),
                                    other => other.to_string(),
                                };
                                ctx.recorder.record(
                                    &*job,
                                    Kind::Warning,
                                    "FailedCreate",
                                    format!("Error creating: {msg}"),
                                );
                                ctx.expectations.expect_creates(&uid, created);
                                return Err(ReconcileError(msg));
                            }
                        }
                    }
                    ctx.expectations.expect_creates(&uid, created);
                }
            }
        }
    }
    status.active = Some(active_count);
    status.ready = Some(active.iter().filter(|p| ready_since(p).is_some()).count() as i32);
    status.succeeded = Some(succeeded);
    status.failed = Some(failed_pods.len() as i32);
    if indexed {
        status.completed_indexes = Some(interval_string(&completed));
    }
    if per_index_limit.is_some() {
        status.failed_indexes = Some(interval_string(&per_index.failed));
    }
    if status != prev {
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
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

impl Ctx {
    fn expectations_satisfied(&self, uid: &str, pods: &[Arc<Pod>]) -> bool {
        self.expectations.satisfied(uid, pods)
    }
}

fn new_pod(job: &Job, name: &str, uid: &str, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(INDEX_KEY.into(), i.to_string());
            annotations.insert(INDEX_KEY.into(), i.to_string());
            // Upstream: the index reaches the containers from the annotation.
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                c.env.get_or_insert_with(Vec::new).push(EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                        }),
                        ..Default::default()
                    }),
                });
            }
            if spec.subdomain.is_some() && spec.hostname.is_none() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: tm.finalizers,
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_collapse_runs() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(interval_string(&s), "0-2,4,6-7");
        assert_eq!(interval_string(&BTreeSet::new()), "");
    }

    #[test]
    fn failure_policy_rules_apply_in_order() {
        let rules: Vec<PodFailurePolicyRule> = serde_json::from_value(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        ]))
        .unwrap_or_default();
        let pod = |code: i32, disrupted: bool| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "n"},
                "status": {
                    "phase": "Failed",
                    "conditions": if disrupted { json!([{"type": "DisruptionTarget", "status": "True"}]) } else { json!([]) },
                    "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": code}}}],
                },
            }))
            .unwrap_or_default()
        };
        assert_eq!(judge(&rules, &pod(1, true)), Verdict::Ignore);
        assert!(
            matches!(judge(&rules, &pod(42, false)), Verdict::FailJob(m) if m.contains("exit code 42"))
        );
        assert_eq!(judge(&rules, &pod(1, false)), Verdict::Count);
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "n", "uid": "u"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap_or_default();
        let pod = new_pod(&job, "j", "u", Some(3));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("j-3-"));
        assert_eq!(index_of(&pod), Some(3));
        let env = pod
            .spec
            .and_then(|s| s.containers[0].env.clone())
            .unwrap_or_default();
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));
    }
}
