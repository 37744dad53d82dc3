//! The built-in CSR signers (`kubernetes.io/kube-apiserver-client`,
//! `kubernetes.io/kube-apiserver-client-kubelet`, `kubernetes.io/kubelet-serving`), as
//! upstream's kube-controller-manager `csrsigning` controller: every CSR that is Approved, not
//! Denied or Failed and has no certificate yet gets one, written through `/status`.
//!
//! Validity: `spec.expirationSeconds` when given, capped at the cluster leaf validity. A request
//! the signer cannot honour (wrong subject or usages for its signer) gets a `Failed` condition
//! with reason `SignerValidationFailure`, as upstream. Runs in the server process with a kube
//! client, so every write is authenticated like any other client's.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::Api;

use crate::api::csr::{self, SIGNER_CLIENT, SIGNER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING};

#[derive(Debug, Clone)]
pub struct Config {
    /// The live PKI: each signer's own signing CA, the current one after a CA rotation; it
    /// also caps lifetimes at the cluster's leaf validity.
    pub authority: Arc<crate::pki::Authority>,
}

/// Sign until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let stream = watcher(api.clone(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::Apply(csr) | watcher::Event::InitApply(csr))) => {
                    handle(&cfg, &api, csr).await;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "CSR signer watch error; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return,
            },
            _ = resync.tick() => {
                // Retries signatures that failed on a transient error (the watch sends no
                // new event for an unchanged object).
                if let Ok(list) = api.list(&ListParams::default()).await {
                    for csr in list.items {
                        handle(&cfg, &api, csr).await;
                    }
                }
            }
        }
    }
}

fn has(csr: &CertificateSigningRequest, ty: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == ty && c.status == "True"))
}

async fn handle(
    cfg: &Config,
    api: &Api<CertificateSigningRequest>,
    mut csr: CertificateSigningRequest,
) {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let signer = csr.spec.signer_name.clone();
    if ![SIGNER_CLIENT, SIGNER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING].contains(&signer.as_str())
        || !has(&csr, "Approved")
        || has(&csr, "Denied")
        || has(&csr, "Failed")
        || csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| !c.0.is_empty())
    {
        return;
    }
    let signed = sign(cfg, &csr_spec_parts(&csr));
    let status = csr.status.get_or_insert_with(Default::default);
    match signed {
        Ok(pem) => {
            status.certificate = Some(k8s_openapi::ByteString(pem.into_bytes()));
        }
        Err(SignError::Invalid(why)) => {
            tracing::info!(csr = %name, signer = %signer, reason = %why, "CSR refused by its signer");
            status.conditions.get_or_insert_with(Vec::new).push(
                CertificateSigningRequestCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("SignerValidationFailure".into()),
                    message: Some(why),
                    ..Default::default()
                },
            );
        }
        Err(SignError::Internal(e)) => {
            tracing::warn!(csr = %name, error = %e, "cannot sign an approved CSR; will retry");
            return;
        }
    }
    match api
        .replace_status(&name, &PostParams::default(), &csr)
        .await
    {
        Ok(_) => tracing::info!(csr = %name, signer = %signer, "CSR signed"),
        Err(e) => {
            tracing::warn!(csr = %name, error = %e, "cannot write the CSR status; will retry")
        }
    }
}

struct Parts {
    signer: String,
    request: Vec<u8>,
    usages: Vec<String>,
    expiration_seconds: Option<i32>,
}

fn csr_spec_parts(csr: &CertificateSigningRequest) -> Parts {
    Parts {
        signer: csr.spec.signer_name.clone(),
        request: csr.spec.request.0.clone(),
        usages: csr.spec.usages.clone().unwrap_or_default(),
        expiration_seconds: csr.spec.expiration_seconds,
    }
}

enum SignError {
    Invalid(String),
    Internal(String),
}

fn sign(cfg: &Config, p: &Parts) -> Result<String, SignError> {
    let req = csr::parse_pem(&p.request).map_err(|e| SignError::Invalid(e.to_string()))?;
    check_signer_rules(&p.signer, &req, &p.usages).map_err(SignError::Invalid)?;
    let mut validity = cfg.authority.leaf_validity();
    if let Some(e) = p.expiration_seconds {
        validity = validity.min(Duration::from_secs(
            u64::try_from(e.max(600)).unwrap_or(600),
        ));
    }
    let (mut params, public_key) = crate::pki::csr::params(&req, &p.usages, validity)
        .map_err(|e| SignError::Invalid(e.to_string()))?;
    cfg.authority
        .sign(&p.signer, &mut params, &public_key)
        .map_err(|e| SignError::Internal(e.to_string()))
}

/// Upstream's per-signer requirements (`pkg/controller/certificates/signer`).
fn check_signer_rules(signer: &str, req: &csr::Request, usages: &[String]) -> Result<(), String> {
    let allowed: &[&str] = match signer {
        SIGNER_CLIENT => &["digital signature", "key encipherment", "client auth"],
        SIGNER_CLIENT_KUBELET => &["digital signature", "key encipherment", "client auth"],
        _ => &["digital signature", "key encipherment", "server auth"],
    };
    if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("usage {u:?} is not allowed for signer {signer}"));
    }
    if signer == SIGNER_CLIENT && !usages.iter().any(|u| u == "client auth") {
        return Err("the client auth usage is required".into());
    }
    if signer != SIGNER_CLIENT {
        let node_subject = req.common_name.starts_with("system:node:")
            && req.common_name.len() > "system:node:".len()
            && req.organizations == ["system:nodes"];
        if !node_subject {
            return Err(format!(
                "signer {signer} only signs subjects CN=system:node:<name>, O=system:nodes"
            ));
        }
    }
    if signer == SIGNER_CLIENT_KUBELET && req.has_sans() {
        return Err("kubelet client certificates carry no subject alternative names".into());
    }
    if signer == SIGNER_KUBELET_SERVING && !usages.iter().any(|u| u == "server auth") {
        return Err("the server auth usage is required".into());
    }
    Ok(())
}
