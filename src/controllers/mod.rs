//! The controller manager: control loops that watch the API and converge objects, one file per
//! controller, each as upstream's controller of the same name.
//!
//! Invariant: controllers reach the cluster only through the Kubernetes API with the
//! controller-manager's own identity (a `kube::Client` over mTLS), never the store, so every
//! change they make is authorized and audited like any other client's.

pub mod clusterrole_aggregation;
pub mod cron_schedule;
pub mod cronjob;
pub mod csr_approver;
pub mod daemonset;
pub mod deployment;
pub mod deployment_rollout;
pub mod events;
pub mod garbage_collector;
pub mod informers;
pub mod job;
pub mod namespace;
pub mod replicaset;
pub mod replication_controller;
pub mod root_ca_publisher;
pub mod serviceaccount;
pub mod statefulset;
pub mod token_cleaner;

use std::future::Future;

#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster CA bundle (PEM) published as `kube-root-ca.crt` in every namespace.
    pub root_ca_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("controller {name}: {detail}")]
    Controller { name: &'static str, detail: String },
}

/// The shared informers of the workload controllers, and the controllers that read them.
struct Workloads {
    pods: informers::Informer<k8s_openapi::api::core::v1::Pod>,
    replica_sets: informers::Informer<k8s_openapi::api::apps::v1::ReplicaSet>,
    deployments: informers::Informer<k8s_openapi::api::apps::v1::Deployment>,
    replication_controllers: informers::Informer<k8s_openapi::api::core::v1::ReplicationController>,
    jobs: informers::Informer<k8s_openapi::api::batch::v1::Job>,
    cronjobs: informers::Informer<k8s_openapi::api::batch::v1::CronJob>,
    daemon_sets: informers::Informer<k8s_openapi::api::apps::v1::DaemonSet>,
    nodes: informers::Informer<k8s_openapi::api::core::v1::Node>,
    stateful_sets: informers::Informer<k8s_openapi::api::apps::v1::StatefulSet>,
}

impl Workloads {
    fn new(client: &kube::Client) -> Self {
        Self {
            pods: informers::Informer::new(kube::Api::all(client.clone())),
            replica_sets: informers::Informer::new(kube::Api::all(client.clone())),
            deployments: informers::Informer::new(kube::Api::all(client.clone())),
            replication_controllers: informers::Informer::new(kube::Api::all(client.clone())),
            jobs: informers::Informer::new(kube::Api::all(client.clone())),
            cronjobs: informers::Informer::new(kube::Api::all(client.clone())),
            daemon_sets: informers::Informer::new(kube::Api::all(client.clone())),
            nodes: informers::Informer::new(kube::Api::all(client.clone())),
            stateful_sets: informers::Informer::new(kube::Api::all(client.clone())),
        }
    }

    /// Subscribe every controller first, then start the watches.
    fn spawn(self, client: &kube::Client, tasks: &mut tokio::task::JoinSet<Result<(), Error>>) {
        let missing = |name: &'static str| Error::Controller {
            name,
            detail: "cannot subscribe to a shared informer".into(),
        };
        match replicaset::run(client.clone(), &self.replica_sets, &self.pods) {
            Some(c) => drop(tasks.spawn(c)),
            None => drop(tasks.spawn(async move { Err(missing("replicaset")) })),
        }
        match deployment::run(client.clone(), &self.deployments, &self.replica_sets) {
            Some(c) => drop(tasks.spawn(c)),
            None => drop(tasks.spawn(async move { Err(missing("deployment")) })),
        }
        match replication_controller::run(client.clone(), &self.replication_controllers, &self.pods) {
            Some(c) => drop(tasks.spawn(c)),
            None => drop(tasks.spawn(async move { Err(missing("replicationcontroller")) })),
        }
        match job::run(client.clone(), &self.jobs, &self.pods) {
            Some(c) => drop(tasks.spawn(c)),
            None => drop(tasks.spawn(async move { Err(missing("job")) })),
        }
        match cronjob::run(client.clone(), &self.cronjobs, &self.jobs) {
            Some(c) => drop(tasks.spawn(c)),
            None => drop(tasks.spawn(async move { Err(missing("cronjob")) })),
        }
        match daemonset::run(client.clone(), &self.daemon_sets, &self.pods, &self.nodes) {
            Some(c) => drop(tasks.spawn(c)),
            None => drop(tasks.spawn(async move { Err(missing("daemonset")) })),
        }
        match statefulset::run(client.clone(), &self.stateful_sets, &self.pods) {
            Some(c) => drop(tasks.spawn(c)),
            None => drop(tasks.spawn(async move { Err(missing("statefulset")) })),
        }
        let stopped = || Error::Controller {
            name: "informer",
            detail: "a shared informer stopped".into(),
        };
        let pods = self.pods.run();
        tasks.spawn(async move { pods.await; Err(stopped()) });
        let sets = self.replica_sets.run();
        tasks.spawn(async move { sets.await; Err(stopped()) });
        let deployments = self.deployments.run();
        tasks.spawn(async move { deployments.await; Err(stopped()) });
        let rcs = self.replication_controllers.run();
        tasks.spawn(async move { rcs.await; Err(stopped()) });
        let jobs = self.jobs.run();
        tasks.spawn(async move { jobs.await; Err(stopped()) });
        let cronjobs = self.cronjobs.run();
        tasks.spawn(async move { cronjobs.await; Err(stopped()) });
        let daemon_sets = self.daemon_sets.run();
        tasks.spawn(async move { daemon_sets.await; Err(stopped()) });
        let nodes = self.nodes.run();
        tasks.spawn(async move { nodes.await; Err(stopped()) });
        let stateful_sets = self.stateful_sets.run();
        tasks.spawn(async move { stateful_sets.await; Err(stopped()) });
    }
}

/// Run every controller until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut tasks: tokio::task::JoinSet<Result<(), Error>> = tokio::task::JoinSet::new();
    // Each controller is spawned here; they stop with the process.
    tasks.spawn(serviceaccount::run(client.clone()));
    tasks.spawn(root_ca_publisher::run(client.clone(), cfg.root_ca_pem));
    tasks.spawn(csr_approver::run(client.clone()));
    tasks.spawn(token_cleaner::run(client.clone()));
    tasks.spawn(clusterrole_aggregation::run(client.clone()));
    tasks.spawn(garbage_collector::run(client.clone()));
    tasks.spawn(namespace::run(client.clone()));
    let workloads = Workloads::new(&client);
    workloads.spawn(&client, &mut tasks);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            done = tasks.join_next() => match done {
                Some(Ok(Err(e))) => tracing::warn!(error = %e, "controller stopped"),
                Some(Err(e)) => tracing::warn!(error = %e, "controller task failed"),
                Some(Ok(Ok(()))) => {}
                None => {
                    shutdown.await;
                    break;
                }
            },
        }
    }
    tasks.abort_all();
    Ok(())
}
