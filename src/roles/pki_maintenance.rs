//! The server's certificate upkeep: renews its own certificates at 2/3 of their life (no
//! restart: the TLS layer follows the PKI's generation), rewrites the admin kubeconfig when the
//! admin certificate or the trust bundle changes, and raises Kubernetes Events — `Normal
//! CertificateRenewed` after a renewal, `Warning CertificateExpiringSoon` when a certificate
//! is close to expiry without having been renewed (a CA within 90 days, a leaf past 5/6 of its
//! life) — so monitoring sees trouble before anything expires.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::pki::{self, Authority};

pub struct Config {
    pub kubeconfig: PathBuf,
    /// The URL the admin kubeconfig points at.
    pub server_url: String,
}

/// How often to look: often enough for short test lifetimes, at most once a minute.
fn interval(validity: Duration) -> Duration {
    (validity / 30).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

pub fn write_kubeconfig(authority: &Authority, cfg: &Config) -> Result<(), String> {
    let m = authority.current();
    let admin = m.identity("admin").ok_or("the PKI has no admin identity")?;
    let doc = pki::kubeconfig::render("rampart", &cfg.server_url, &m.bundle_pem, "admin", &admin);
    pki::kubeconfig::write(&cfg.kubeconfig, &doc)
        .map_err(|e| format!("cannot write the admin kubeconfig: {e}"))
}

async fn event(authority: &Authority, server_url: &str, reason: &str, kind: &str, message: String) {
    let m = authority.current();
    let Some(id) = m.identity("controller-manager") else {
        return;
    };
    let creds = crate::client::Credentials::Certificate {
        cert_pem: id.cert_pem,
        key_pem: id.key_pem,
    };
    let client = match crate::client::build(server_url, &m.bundle_pem, &creds).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot record a certificate event");
            return;
        }
    };
    let now = Time(jiff::Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some("rampart-pki.".into()),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Namespace".into()),
            name: Some("kube-system".into()),
            api_version: Some("v1".into()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(kind.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("rampart-pki".into()),
            host: None,
        }),
        ..Default::default()
    };
    let api: kube::Api<Event> = kube::Api::namespaced(client, "kube-system");
    if let Err(e) = api.create(&Default::default(), &ev).await {
        tracing::warn!(error = %e, reason, "cannot record a certificate event");
    }
}

pub async fn run(
    authority: Arc<Authority>,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut changes = authority.subscribe();
    let mut warned: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(interval(authority.leaf_validity()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Err(e) = write_kubeconfig(&authority, &cfg) {
                    tracing::error!(error = %e, "admin kubeconfig not updated");
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let a = authority.clone();
        match tokio::task::spawn_blocking(move || a.renew_due()).await {
            Ok(Ok(renewed)) if !renewed.is_empty() => {
                tracing::info!(?renewed, "certificates renewed");
                let msg = format!("renewed certificates: {}", renewed.join(", "));
                event(
                    &authority,
                    &cfg.server_url,
                    "CertificateRenewed",
                    "Normal",
                    msg,
                )
                .await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "certificate renewal failed"),
            Err(e) => tracing::error!(error = %e, "certificate renewal task failed"),
        }
        let now = jiff::Timestamp::now().as_second();
        for (name, info) in authority.inventory() {
            let left = info.not_after - now;
            let soon = if info.is_ca {
                left < 90 * 24 * 3600
            } else {
                left < info.lifetime() / 6
            };
            if soon && warned.insert(info.serial.clone()) {
                let msg = format!(
                    "certificate {name} ({}) expires in {}s, at {}; renew or rotate it",
                    info.subject,
                    left.max(0),
                    jiff::Timestamp::from_second(info.not_after)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                );
                tracing::warn!("{msg}");
                event(
                    &authority,
                    &cfg.server_url,
                    "CertificateExpiringSoon",
                    "Warning",
                    msg,
                )
                .await;
            }
        }
    }
}
