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
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod garbage_collector;
pub mod hpa;
pub mod hpa_behavior;
pub mod hpa_custom;
pub mod hpa_replicas;
pub mod informers;
pub mod job;
pub mod job_indexes;
pub mod local_path;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pod_gc;
pub mod replicaset;
pub mod replication_controller;
pub mod root_ca_publisher;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod token_cleaner;

use std::future::Future;

use futures::FutureExt;

#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster CA bundle (PEM) published as `kube-root-ca.crt` in every namespace.
    pub root_ca_pem: String,
    /// Node lifecycle: how long a node's Lease may go unrenewed before it is Unknown.
    pub node_monitor_grace_period: std::time::Duration,
    /// Node IPAM: the cluster CIDR and per-node slice size.
    pub cluster_cidr: node_ipam::Cidr,
    /// Pod GC: `--terminated-pod-gc-threshold` (its quarantine is the grace period above).
    pub terminated_pod_gc_threshold: usize,
    /// HPA: `--horizontal-pod-autoscaler-sync-period`.
    pub hpa_sync_period: std::time::Duration,
    /// local-path: where volumes live on every node.
    pub local_storage_path: std::path::PathBuf,
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
    services: informers::Informer<k8s_openapi::api::core::v1::Service>,
    budgets: informers::Informer<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
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
            services: informers::Informer::new(kube::Api::all(client.clone())),
            budgets: informers::Informer::new(kube::Api::all(client.clone())),
        }
    }

    /// Subscribe every controller first, then start the watches.
    fn spawn(
        self,
        client: &kube::Client,
        pod_gc: pod_gc::Config,
        tasks: &mut tokio::task::JoinSet<Result<(), Error>>,
    ) {
        let c = client.clone();
        tasks.spawn(pod_gc::run(c.clone(), pod_gc, &self.pods, &self.nodes));
        tasks.spawn(replicaset::run(c.clone(), &self.replica_sets, &self.pods));
        tasks.spawn(replication_controller::run(
            c.clone(),
            &self.replication_controllers,
            &self.pods,
        ));
        tasks.spawn(deployment::run(
            c.clone(),
            &self.deployments,
            &self.replica_sets,
        ));
        tasks.spawn(job::run(c.clone(), &self.jobs, &self.pods));
        tasks.spawn(cronjob::run(c.clone(), &self.cronjobs, &self.jobs));
        tasks.spawn(daemonset::run(
            c.clone(),
            &self.daemon_sets,
            &self.pods,
            &self.nodes,
        ));
        tasks.spawn(statefulset::run(c.clone(), &self.stateful_sets, &self.pods));
        tasks.spawn(endpoints::run(c.clone(), &self.services, &self.pods));
        tasks.spawn(disruption::run(
            c.clone(),
            disruption::Informers {
                budgets: &self.budgets,
                pods: &self.pods,
                replica_sets: &self.replica_sets,
                deployments: &self.deployments,
                replication_controllers: &self.replication_controllers,
                stateful_sets: &self.stateful_sets,
            },
        ));
        tasks.spawn(endpointslice::run(c, &self.services, &self.pods));
        let watches = [
            self.pods.run().boxed(),
            self.replica_sets.run().boxed(),
            self.deployments.run().boxed(),
            self.replication_controllers.run().boxed(),
            self.jobs.run().boxed(),
            self.cronjobs.run().boxed(),
            self.daemon_sets.run().boxed(),
            self.nodes.run().boxed(),
            self.stateful_sets.run().boxed(),
            self.services.run().boxed(),
            self.budgets.run().boxed(),
        ];
        for watch in watches {
            tasks.spawn(async move {
                watch.await;
                Err(Error::Controller {
                    name: "informer",
                    detail: "a shared informer stopped".into(),
                })
            });
        }
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
    let pod_gc = pod_gc::Config {
        terminated_pod_gc_threshold: cfg.terminated_pod_gc_threshold,
        quarantine: cfg.node_monitor_grace_period,
    };
    workloads.spawn(&client, pod_gc, &mut tasks);
    tasks.spawn(node_lifecycle::run(
        client.clone(),
        node_lifecycle::Config {
            grace_period: cfg.node_monitor_grace_period,
        },
    ));
    tasks.spawn(node_ipam::run(client.clone(), cfg.cluster_cidr));
    tasks.spawn(servicelb::run(client.clone()));
    tasks.spawn(hpa::run(
        client.clone(),
        hpa::Config {
            sync_period: cfg.hpa_sync_period,
        },
    ));
    tasks.spawn(local_path::run(
        client.clone(),
        local_path::Config {
            storage_path: cfg.local_storage_path,
        },
    ));
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
