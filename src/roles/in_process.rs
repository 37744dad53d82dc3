//! What `rampart server` runs beside the API server once it listens, each as a client of the
//! API over loopback HTTPS: the controller manager, the CSR signer and, unless
//! `--disable-agent`, the embedded agent — joined through the same path as any other node
//! (a join token the server creates for itself when the agent has no certificate yet).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::supervisor::Shutdown;
use crate::client::Credentials;
use crate::pki;

pub struct Config {
    pub authority: Arc<pki::Authority>,
    pub data_dir: PathBuf,
    /// `None` with `--disable-agent`.
    pub agent: Option<EmbeddedAgent>,
}

pub struct EmbeddedAgent {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub kubelet: crate::cli::KubeletArgs,
}

/// Wait for the API server's URL, then run everything until shutdown.
pub async fn run(
    cfg: Config,
    ready: tokio::sync::oneshot::Receiver<String>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let Ok(server) = ready.await else {
        return Ok(());
    };
    let manager = tokio::spawn(controller_manager(
        cfg.authority.clone(),
        server.clone(),
        shutdown.clone(),
    ));
    let m = cfg.authority.current();
    let client = manager_client(&cfg.authority, &server).await?;
    if let Some(a) = cfg.agent {
        let data_dir = cfg.data_dir.join("agent");
        let token = if super::agent::has_identity(&data_dir) {
            None
        } else {
            match super::token::create(
                &client,
                Some(3600),
                "the server's embedded agent",
                &m.bundle_pem,
            )
            .await
            {
                Ok(t) => Some(t.render()),
                Err(e) => {
                    // The agent then reports the missing token; the control plane carries on.
                    tracing::error!(error = %format!("{e:#}"), "cannot create the embedded agent's join token");
                    None
                }
            }
        };
        let agent_cfg = super::agent::Config {
            server: server.clone(),
            token,
            data_dir,
            hostname: a.node_name.clone(),
            node_name: a.node_name,
            node_ip: a.node_ip,
            extra_labels: vec![(
                "node-role.kubernetes.io/control-plane".into(),
                "true".into(),
            )],
            kubelet: a.kubelet,
        };
        if let Err(e) = super::agent::run(agent_cfg, shutdown.clone().wait()).await {
            tracing::error!(error = %format!("{e:#}"), "the embedded agent stopped");
        }
    }
    let _ = manager.await;
    Ok(())
}

/// A client with the controller manager's current certificate
/// (CN=system:kube-controller-manager).
async fn manager_client(authority: &pki::Authority, server: &str) -> anyhow::Result<kube::Client> {
    let m = authority.current();
    let id = m
        .identity("controller-manager")
        .context("the PKI has no controller-manager identity")?;
    let creds = Credentials::Certificate {
        cert_pem: id.cert_pem,
        key_pem: id.key_pem,
    };
    crate::client::build(server, &m.bundle_pem, &creds)
        .await
        .context("cannot build the in-process API client")
}

/// The controllers and the CSR signer (as upstream's kube-controller-manager hosts both),
/// restarted with a fresh client whenever the controller manager's certificate or the trust
/// bundle changes — renewal every few days, CA rotation — so they never run on an expired
/// identity or publish a stale `kube-root-ca.crt`.
async fn controller_manager(authority: Arc<pki::Authority>, server: String, shutdown: Shutdown) {
    let mut changes = authority.subscribe();
    loop {
        let m = authority.current();
        let fingerprint = |m: &pki::Material| {
            (
                m.leaf("controller-manager").map(|l| l.info.serial.clone()),
                m.bundle_pem.clone(),
            )
        };
        let running = fingerprint(&m);
        let client = match manager_client(&authority, &server).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot start the controller manager; retrying");
                tokio::select! {
                    _ = shutdown.clone().wait() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
                }
            }
        };
        let controllers = tokio::spawn(crate::controllers::run(
            crate::controllers::Config {
                root_ca_pem: m.bundle_pem.clone(),
            },
            client.clone(),
            shutdown.clone().wait(),
        ));
        let signer = tokio::spawn(super::csr_signer::run(
            super::csr_signer::Config {
                authority: authority.clone(),
            },
            client,
            shutdown.clone().wait(),
        ));
        let stop = loop {
            tokio::select! {
                _ = shutdown.clone().wait() => break true,
                r = changes.changed() => {
                    if r.is_err() {
                        break true;
                    }
                    if fingerprint(&authority.current()) != running {
                        tracing::info!("controller-manager identity or trust bundle changed; restarting the controllers");
                        break false;
                    }
                }
            }
        };
        controllers.abort();
        signer.abort();
        let _ = controllers.await;
        let _ = signer.await;
        if stop {
            return;
        }
    }
}
