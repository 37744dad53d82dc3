//! The CronJob controller, as upstream's `cronjob` controller (v2): creates a Job for each
//! scheduled time (`cron_schedule.rs`, in `spec.timeZone`), named `<cronjob>-<minutes since
//! the epoch>` so a time is never run twice, and keeps `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`.
//!
//! - Missed runs: only the most recent missed time is started (upstream's behaviour after a
//!   controller outage); more than 100 missed times raise a `TooManyMissedTimes` warning; a time
//!   older than `startingDeadlineSeconds` is skipped (`MissSchedule`).
//! - `concurrencyPolicy`: `Allow`; `Forbid` skips a time while a Job is active
//!   (`JobAlreadyActive`); `Replace` deletes the active Jobs first (Background propagation).
//! - `suspend` stops new runs; finished Jobs beyond `successfulJobsHistoryLimit` /
//!   `failedJobsHistoryLimit` are deleted, oldest first.
//! - Requeued for the next scheduled time (never polled); Job changes wake it up through the
//!   shared Job informer.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use serde_json::json;

use super::cron_schedule::Schedule;
use super::events::{Kind, Recorder};
use super::informers::Informer;
use super::replicaset::{controller_of, owners_of};
use super::Error;

const NAME: &str = "cronjob-controller";
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

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
    jobs: Store<Job>,
    recorder: Recorder,
}

pub fn run(
    client: kube::Client,
    cronjobs: &Informer<CronJob>,
    jobs: &Informer<Job>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    // kube-runtime's applier waits for its store with a wait that wakes one waiter only;
    // waiting here first makes that wait return at once.
    let main_ready = cronjobs.ready();
    let jobs_ready = jobs.ready();
    let store = cronjobs.store();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        jobs: jobs.store(),
    });
    let controller = Controller::for_stream(cronjobs.triggers(), store.clone()).reconcile_on(
        jobs.related(move |job: &Job| {
            if controller_of(&job.metadata).is_none() {
                return Vec::new();
            }
            let as_pod = k8s_openapi::api::core::v1::Pod {
                metadata: job.metadata.clone(),
                ..Default::default()
            };
            owners_of(&as_pod, &store, "CronJob", |_: &CronJob| None::<Selector>)
        }),
    );
    async move {
        // Decide nothing before the caches hold a full list: a half-filled cache would look
        // like missing objects.
        jobs_ready.await;
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

fn error_policy(_: Arc<CronJob>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Finished as "Complete" or "Failed", with when.
fn finished(job: &Job) -> Option<(&'static str, Option<jiff::Timestamp>)> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    for (t, name) in [("Complete", "Complete"), ("Failed", "Failed")] {
        if let Some(c) = conds.iter().find(|c| c.type_ == t && c.status == "True") {
            return Some((name, c.last_transition_time.as_ref().map(|t| t.0)));
        }
    }
    None
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: None,
        ..Default::default()
    }
}

fn until(t: jiff::Timestamp) -> Duration {
    let left = t.duration_since(jiff::Timestamp::now());
    Duration::try_from(left).unwrap_or(Duration::ZERO) + Duration::from_millis(100)
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(name), Some(uid), Some(spec)) = (
        cj.metadata.namespace.clone(),
        cj.metadata.name.clone(),
        cj.metadata.uid.clone(),
        Some(&cj.spec),
    ) else {
        return Ok(Action::await_change());
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| controller_of(&j.metadata).is_some_and(|c| c.uid == uid))
        .collect();
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let prev = cj.status.clone().unwrap_or_default();
    let mut status = prev.clone();

    // Active jobs and the last success.
    let mut active: Vec<ObjectReference> = Vec::new();
    for j in &jobs {
        match finished(j) {
            None if j.metadata.deletion_timestamp.is_none() => active.push(reference(j)),
            None => {}
            Some((kind, at)) => {
                let was_active = prev
                    .active
                    .iter()
                    .flatten()
                    .any(|r| r.uid == j.metadata.uid);
                if was_active {
                    ctx.recorder.record(
                        &*cj,
                        Kind::Normal,
                        "SawCompletedJob",
                        format!(
                            "Saw completed job: {}, condition: {kind}",
                            j.metadata.name.as_deref().unwrap_or_default()
                        ),
                    );
                }
                if kind == "Complete" {
                    if let Some(at) = at {
                        if status
                            .last_successful_time
                            .as_ref()
                            .is_none_or(|t| t.0 < at)
                        {
                            status.last_successful_time = Some(Time(at));
                        }
                    }
                }
            }
        }
    }
    // Jobs listed as active that the cache does not show yet (our own fresh create): ask the
    // API, as upstream does, instead of dropping them.
    for r in prev.active.iter().flatten() {
        let known = jobs.iter().any(|j| j.metadata.uid == r.uid);
        if known || active.iter().any(|a| a.uid == r.uid) {
            continue;
        }
        let Some(jn) = r.name.as_deref() else {
            continue;
        };
        if let Some(j) = job_api.get_opt(jn).await? {
            if j.metadata.uid == r.uid && finished(&j).is_none() {
                active.push(reference(&j));
            }
        }
    }
    status.active = (!active.is_empty()).then_some(active.clone());

    // History limits.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| finished(j).is_some_and(|(k, _)| k == kind))
            .collect();
        let limit = limit.max(0) as usize;
        if done.len() > limit {
            done.sort_by_key(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref().map(|t| t.0))
                    .or(j.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            let excess = done.len() - limit;
            for j in done.into_iter().take(excess) {
                let jn = j.metadata.name.clone().unwrap_or_default();
                match job_api.delete(&jn, &DeleteParams::background()).await {
                    Ok(_) => ctx.recorder.record(
                        &*cj,
                        Kind::Normal,
                        "SuccessfulDelete",
                        format!("Deleted job {jn}"),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    let schedule = match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            ctx.recorder.record(
                &*cj,
                Kind::Warning,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            );
            write_status(&cj_api, &name, &prev, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let now = jiff::Timestamp::now();
    let mut requeue = schedule.next_after(now).map(until);
    if spec.suspend.unwrap_or(false) {
        write_status(&cj_api, &name, &prev, &status).await?;
        return Ok(Action::await_change());
    }

    // The most recent missed time since the last run (or creation).
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let floor = now - jiff::SignedDuration::from_secs(deadline.max(0));
        if floor > earliest {
            earliest = floor;
        }
    }
    let mut missed = 0u32;
    let mut most_recent = None;
    let mut t = earliest;
    while let Some(next) = schedule.next_after(t) {
        if next > now {
            break;
        }
        missed += 1;
        most_recent = Some(next);
        t = next;
        if missed == 100 {
            // Upstream warns and starts only the latest; skip ahead rather than walk them all.
            ctx.recorder.record(
                &*cj,
                Kind::Warning,
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
            );
            let jump = now - jiff::SignedDuration::from_secs(3600);
            if jump > t {
                t = jump;
            }
        }
    }
    let Some(scheduled) = most_recent else {
        write_status(&cj_api, &name, &prev, &status).await?;
        return Ok(requeue.map_or(Action::await_change(), Action::requeue));
    };
    if let Some(deadline) = spec.starting_deadline_seconds {
        if scheduled + jiff::SignedDuration::from_secs(deadline.max(0)) < now {
            ctx.recorder.record(
                &*cj,
                Kind::Warning,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {scheduled}"),
            );
            write_status(&cj_api, &name, &prev, &status).await?;
            return Ok(requeue.map_or(Action::await_change(), Action::requeue));
        }
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        ctx.recorder.record(
            &*cj,
            Kind::Normal,
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .into(),
        );
        write_status(&cj_api, &name, &prev, &status).await?;
        // Woken by the active Job finishing, or the next time.
        return Ok(requeue.map_or(Action::await_change(), Action::requeue));
    }
    if policy == "Replace" {
        for r in &active {
            let Some(jn) = r.name.as_deref() else {
                continue;
            };
            match job_api.delete(jn, &DeleteParams::background()).await {
                Ok(_) => ctx.recorder.record(
                    &*cj,
                    Kind::Normal,
                    "SuccessfulDelete",
                    format!("Deleted job {jn}"),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        active.clear();
    }

    // Create the Job for `scheduled`.
    let job_name = format!("{name}-{}", scheduled.as_second() / 60);
    let template = spec.job_template.clone();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_AT.into(), scheduled.to_string());
    let job = Job {
        metadata: ObjectMeta {
            name: Some(job_name.clone()),
            namespace: Some(ns.clone()),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: name.clone(),
                uid: uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(template.spec.unwrap_or_else(JobSpec::default)),
        status: None,
    };
    match job_api.create(&PostParams::default(), &job).await {
        Ok(created) => {
            ctx.recorder.record(
                &*cj,
                Kind::Normal,
                "SuccessfulCreate",
                format!("Created job {job_name}"),
            );
            active.push(reference(&created));
        }
        // Already created for this time (a restart, or a lagging cache).
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            let msg = match &e {
                kube::Error::Api(s) => s.message.clone(),
                other => other.to_string(),
            };
            ctx.recorder.record(
                &*cj,
                Kind::Warning,
                "FailedCreate",
                format!("Error creating job: {msg}"),
            );
            return Err(e.into());
        }
    }
    status.active = (!active.is_empty()).then_some(active);
    status.last_schedule_time = Some(Time(scheduled));
    write_status(&cj_api, &name, &prev, &status).await?;
    if requeue.is_none() {
        requeue = Some(Duration::from_secs(60));
    }
    Ok(requeue.map_or(Action::await_change(), Action::requeue))
}

async fn write_status(
    api: &Api<CronJob>,
    name: &str,
    prev: &k8s_openapi::api::batch::v1::CronJobStatus,
    status: &k8s_openapi::api::batch::v1::CronJobStatus,
) -> Result<(), ReconcileError> {
    if prev == status {
        return Ok(());
    }
    // Merge patch: `active: null` clears the list. The times only move forward: a reconcile
    // working from a cache that has not seen the last write must never null them.
    let mut fields = serde_json::Map::new();
    fields.insert("active".into(), json!(status.active));
    if let Some(t) = &status.last_schedule_time {
        fields.insert("lastScheduleTime".into(), json!(t));
    }
    if let Some(t) = &status.last_successful_time {
        fields.insert("lastSuccessfulTime".into(), json!(t));
    }
    let patch = json!({ "status": fields });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
