//! The controller manager: control loops that watch the API and converge objects, one file per
//! controller, each as upstream's controller of the same name.
//!
//! Invariant: controllers reach the cluster only through the Kubernetes API with the
//! controller-manager's own identity (a `kube::Client` over mTLS), never the store, so every
//! change they make is authorized and audited like any other client's.

pub mod clusterrole_aggregation;
pub mod csr_approver;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod root_ca_publisher;
pub mod serviceaccount;
pub mod token_cleaner;

use std::future::Future;

#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster CA bundle (PEM) published as `kube-root-ca.crt` in every namespace.
    pub root_ca_pem: String,
    /// Node lifecycle: how long a node's Lease may go unrenewed before it is Unknown.
    pub node_monitor_grace_period: std::time::Duration,
    /// Node IPAM: the cluster CIDR and per-node slice size.
    pub cluster_cidr: node_ipam::Cidr,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("controller {name}: {detail}")]
    Controller { name: &'static str, detail: String },
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
    tasks.spawn(node_lifecycle::run(
        client.clone(),
        node_lifecycle::Config {
            grace_period: cfg.node_monitor_grace_period,
        },
    ));
    tasks.spawn(node_ipam::run(client.clone(), cfg.cluster_cidr));
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
