//! Lease-based leader election, as client-go's `leaderelection` with a `LeaseLock`: one
//! `coordination.k8s.io/v1` Lease per component (`kube-system/kube-scheduler`,
//! `kube-system/kube-controller-manager`), so several servers can run the same components and
//! only one of each acts at a time.
//!
//! Timing is upstream's: a candidate retries every `retry_period` (2 s); a holder renews every
//! `retry_period` and gives up leading when it could not renew for `renew_deadline` (10 s); a
//! lease not renewed for `lease_duration` (15 s) may be taken over. As client-go, expiry is
//! judged by the *local* time at which this candidate last saw the record change, never by
//! comparing the holder's timestamps with our clock (no clock-skew assumption). Writes are
//! compare-and-swap on `resourceVersion`, so two candidates can never both win one round.
//! On shutdown the holder releases the lease (empty holder, 1 s duration), so a restarted
//! server leads again at once.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    /// Who we are in `holderIdentity` (unique per candidate).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Config {
    /// Upstream's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Config {
        Config {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// What this candidate last saw, and when (local clock).
#[derive(Default)]
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    at: Option<Instant>,
}

pub struct Elector {
    cfg: Config,
    api: Api<Lease>,
    observed: Observed,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    pub fn new(cfg: Config, client: kube::Client) -> Elector {
        let api = Api::namespaced(client, &cfg.namespace);
        Elector {
            cfg,
            api,
            observed: Observed::default(),
        }
    }

    fn err(&self, source: kube::Error) -> Error {
        Error::Api {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            source,
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`: `Ok(true)` when we hold the lease now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let me = self.cfg.identity.clone();
        let duration = self.cfg.lease_duration.as_secs() as i32;
        let fresh = LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(duration),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: Some(0),
            ..Default::default()
        };
        let current = match self.api.get_opt(&self.cfg.name).await {
            Ok(c) => c,
            Err(e) => return Err(self.err(e)),
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(fresh),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observe(&lease);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        if self.observed.record.as_ref() != Some(&record) {
            self.observed.record = Some(record);
            self.observed.at = Some(Instant::now());
        }
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_other = !holder.is_empty() && holder != me;
        let their_duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration).max(1) as u64);
        let expired = self
            .observed
            .at
            .is_none_or(|at| at.elapsed() > their_duration);
        if held_by_other && !expired {
            return Ok(false);
        }
        let mut next = spec.clone();
        if holder != me {
            next.acquire_time = Some(now());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(me);
        next.lease_duration_seconds = Some(duration);
        next.renew_time = Some(now());
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(stored) => {
                self.observe(&stored);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        self.observed.record = Some((spec.holder_identity, spec.renew_time));
        self.observed.at = Some(Instant::now());
    }

    /// Give the lease up if we hold it (client-go's `ReleaseOnCancel`).
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        if let Err(e) = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(error = %e, lease = %self.cfg.name, "cannot release the lease");
        }
    }
}

/// Campaign for the lease and run `work()` while leading; stop it when leadership is lost
/// (and campaign again), until `shutdown` resolves. `work` is started afresh each term.
pub async fn run<F, Fut>(
    cfg: Config,
    client: kube::Client,
    mut work: F,
    shutdown: impl Future<Output = ()> + Send,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let retry = cfg.retry_period;
    let deadline = cfg.renew_deadline;
    let name = cfg.name.clone();
    let mut elector = Elector::new(cfg, client);
    tokio::pin!(shutdown);
    loop {
        // Candidate.
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "leader election"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(retry) => {}
            }
        }
        tracing::info!(lease = %name, "became leader");
        let mut task = tokio::spawn(work());
        let mut renewed = Instant::now();
        let mut finished = false;
        let stop = loop {
            tokio::select! {
                _ = &mut shutdown => break true,
                _ = &mut task => {
                    // The work ended on its own: hand over and campaign again.
                    finished = true;
                    break false;
                }
                _ = tokio::time::sleep(retry) => {
                    match elector.try_acquire_or_renew().await {
                        Ok(true) => renewed = Instant::now(),
                        Ok(false) => {
                            tracing::warn!(lease = %name, "leadership taken over");
                            break false;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot renew the lease");
                            if renewed.elapsed() > deadline {
                                tracing::warn!(lease = %name, "renew deadline passed; stepping down");
                                break false;
                            }
                        }
                    }
                }
            }
        };
        if !finished {
            task.abort();
            let _ = task.await;
        }
        if stop {
            elector.release().await;
            return;
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}
