//! The agent's side of joining and certificate renewal: fetch `/cacerts` before trusting
//! anything and pin it to the join token's hash, then request certificates with CSRs and wait
//! for the signer.
//!
//! Invariant: the only connection that does not verify the server is the single `/cacerts`
//! fetch, whose answer is trusted only if its SHA-256 equals the hash in the token (compared in
//! constant time). Keys are generated here and never leave this machine.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::PostParams;
use kube::Api;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::csr::{hex, SIGNER_CLIENT, SIGNER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING};
use crate::auth::bootstrap::{constant_time_eq, JoinToken};

/// Largest CA bundle we accept from an unverified server.
const MAX_BUNDLE: usize = 1 << 20;

/// `GET /cacerts` without verifying the server (the caller pins the answer by hash).
pub async fn fetch_cacerts_unverified(server: &str) -> anyhow::Result<String> {
    let uri: http::Uri = server
        .parse()
        .map_err(|_| anyhow!("--server {server:?} is not a URL like https://HOST:6443"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--server {server:?} must be an https:// URL");
    }
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("--server {server:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(6443);
    // Any server certificate: this one fetch is pinned by the CA hash in the token.
    let config = crate::tls::client::client_config(
        crate::tls::client::Trust::AnyServer,
        None,
        &[b"http/1.1"],
    )
    .map_err(|e| anyhow!("TLS setup failed: {e}"))?;
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.clone())
            .map_err(|_| anyhow!("invalid server name {host:?}"))?,
    };
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("cannot connect to {host}:{port}"))?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake with the server failed")?;
        let req = format!("GET /cacerts HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = match tls.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                // Servers often close without close_notify after Connection: close.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(anyhow!(e).context("reading /cacerts failed")),
            };
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > MAX_BUNDLE {
                bail!("the server's /cacerts answer is too large");
            }
        }
        parse_http(&raw)
    };
    tokio::time::timeout(Duration::from_secs(15), fetch)
        .await
        .map_err(|_| anyhow!("fetching {server}/cacerts timed out"))?
}

fn parse_http(raw: &[u8]) -> anyhow::Result<String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("the server's /cacerts answer is not HTTP"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("");
    if status != "200" {
        bail!("GET /cacerts answered HTTP {status}");
    }
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut data: &[u8] = &body;
        while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = pos + 2;
            let end = (start + size).min(data.len());
            out.extend_from_slice(&data[start..end]);
            data = &data[(end + 2).min(data.len())..];
        }
        body = out;
    }
    String::from_utf8(body).map_err(|_| anyhow!("the server's CA bundle is not text"))
}

/// Fetch the CA bundle and check it against the token's pin.
pub async fn pinned_ca(server: &str, token: &JoinToken) -> anyhow::Result<String> {
    let bundle = fetch_cacerts_unverified(server).await?;
    let got = hex(&Sha256::digest(bundle.as_bytes()));
    if !constant_time_eq(got.as_bytes(), token.ca_hash.as_bytes()) {
        bail!(
            "the server's CA bundle does not match the token's hash (expected {}, got {got})",
            token.ca_hash
        );
    }
    Ok(bundle)
}

/// A server joining another one (`rampart server --server URL --token T`): pin the CA by the
/// token's hash, then fetch the cluster's keys over TLS verified against that CA,
/// authenticated by the server token (`GET /rampart/v1/server-bootstrap`). Returns
/// `(relative path, content)` pairs, each checked against the fixed list of shared files.
/// The content is key material: the caller writes it 0600 and never logs it.
pub async fn fetch_server_bootstrap(
    server: &str,
    token: &JoinToken,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use base64::Engine;
    let ca_pem = pinned_ca(server, token).await?;
    let client = crate::client::build(
        server,
        &ca_pem,
        &crate::client::Credentials::Bearer(token.bearer.as_bearer()),
    )
    .await
    .context("cannot build a client for the server join")?;
    let req = http::Request::get(crate::apiserver::endpoints::server_bootstrap::PATH)
        .body(Vec::new())
        .context("cannot build the server bootstrap request")?;
    let text = match client.request_text(req).await {
        Ok(t) => t,
        Err(kube::Error::Api(status)) => bail!(
            "{server} refused to hand over the cluster's keys: {} ({})",
            status.message,
            status.code
        ),
        Err(e) => return Err(anyhow!(e).context(format!("cannot reach {server}"))),
    };
    #[derive(serde::Deserialize)]
    struct Answer {
        files: std::collections::BTreeMap<String, String>,
    }
    let answer: Answer = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{server} sent a malformed server bootstrap answer: {e}"))?;
    let mut out = Vec::new();
    for (name, b64) in answer.files {
        if !crate::apiserver::endpoints::server_bootstrap::allowed_file(&name) {
            bail!("{server} sent an unexpected file {name:?} in its bootstrap answer");
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| anyhow!("{server} sent {name} not base64-encoded"))?;
        out.push((name, bytes));
    }
    if !out.iter().any(|(n, _)| n == "pki/ca.key") {
        bail!("{server} sent no cluster CA key in its bootstrap answer");
    }
    Ok(out)
}

/// What certificate to ask for.
pub enum Kind<'a> {
    /// `kube-apiserver-client-kubelet`: `CN=system:node:<name>, O=system:nodes`.
    Client,
    /// `kube-apiserver-client`: the node's service proxy,
    /// `CN=system:kube-proxy:<name>, O=system:node-proxier`.
    Proxy,
    /// `kubelet-serving` with these SANs.
    Serving {
        dns: &'a [String],
        ips: &'a [IpAddr],
    },
}

/// A fresh key and a signed certificate for it, PEM.
pub struct Issued {
    pub key_pem: String,
    pub cert_pem: String,
}

/// Generate a key, create a CSR with `client`, wait until it is signed (or refused).
pub async fn request(
    client: &kube::Client,
    node: &str,
    kind: Kind<'_>,
    wait: Duration,
) -> anyhow::Result<Issued> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("cannot generate a key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Kind::Proxy = kind {
        dn.push(DnType::CommonName, format!("system:kube-proxy:{node}"));
        dn.push(DnType::OrganizationName, "system:node-proxier");
    } else {
        dn.push(DnType::CommonName, format!("system:node:{node}"));
        dn.push(DnType::OrganizationName, "system:nodes");
    }
    params.distinguished_name = dn;
    let (signer, usages) = match &kind {
        Kind::Client => (
            SIGNER_CLIENT_KUBELET,
            vec!["digital signature", "client auth"],
        ),
        Kind::Proxy => (SIGNER_CLIENT, vec!["digital signature", "client auth"]),
        Kind::Serving { dns, ips } => {
            for d in dns.iter() {
                params.subject_alt_names.push(SanType::DnsName(
                    d.as_str().try_into().context("invalid DNS name")?,
                ));
            }
            for ip in ips.iter() {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
            (
                SIGNER_KUBELET_SERVING,
                vec!["digital signature", "server auth"],
            )
        }
    };
    let csr_pem = params
        .serialize_request(&key)
        .context("cannot build the CSR")?
        .pem()
        .context("cannot encode the CSR")?;
    let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {
            "request": base64_encode(csr_pem.as_bytes()),
            "signerName": signer,
            "usages": usages,
        },
    }))?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = match api.create(&PostParams::default(), &csr).await {
        Ok(c) => c,
        Err(kube::Error::Api(e)) if e.code == 401 => bail!(
            "the API server refused our credentials (401 Unauthorized: {}); for a join, the token is wrong, expired or deleted: create a new one with `rampart token create`",
            e.message
        ),
        Err(e) => return Err(anyhow!(e).context("cannot create the certificate signing request")),
    };
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer, "certificate requested; waiting for approval and signature");
    let cond = |obj: Option<&CertificateSigningRequest>| {
        obj.and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
                || s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Denied" || c.type_ == "Failed")
        })
    };
    let done = tokio::time::timeout(wait, kube::runtime::wait::await_condition(api, &name, cond))
        .await
        .map_err(|_| anyhow!("certificate request {name} was not signed within {}s (is it waiting for `kubectl certificate approve {name}`?)", wait.as_secs()))?
        .with_context(|| format!("watching certificate request {name} failed"))?
        .ok_or_else(|| anyhow!("certificate request {name} was deleted"))?;
    let status = done.status.unwrap_or_default();
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
    {
        bail!(
            "certificate request {name} was {}: {} ({})",
            if c.type_ == "Denied" {
                "denied"
            } else {
                "refused by the signer"
            },
            c.message.clone().unwrap_or_default(),
            c.reason.clone().unwrap_or_default()
        );
    }
    let cert_pem = String::from_utf8(status.certificate.map(|c| c.0).unwrap_or_default())
        .map_err(|_| anyhow!("certificate request {name}: the certificate is not PEM"))?;
    Ok(Issued {
        key_pem: key.serialize_pem(),
        cert_pem,
    })
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
