//! The small HTTP/1.1 client the registry pulls use: hyper's connection API over TCP, or
//! over rustls (ring provider, so the binary stays static) for `https://`. One connection per
//! request: a pull makes a handful of requests, and a fresh connection keeps a stalled one
//! from blocking the next.
//!
//! TLS per endpoint from `registries.yaml`: the system roots plus `ca_file`, a client
//! certificate (`cert_file`/`key_file`), or `insecure_skip_verify` (the handshake signatures
//! are still checked; only the chain and name are not).
//!
//! Invariants: every step is bounded in time (connect 10 s, response headers 30 s, and each
//! body read 60 s without progress); errors name the URL without its query (a token
//! endpoint's query may name the account) and never a header value.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;

use super::registries::Tls;
use crate::tls::client::{client_config, roots_from_pem, ClientIdentity, Error as TlsError, Trust};

const CONNECT: Duration = Duration::from_secs(10);
const HEADERS: Duration = Duration::from_secs(30);
/// A body read that makes no progress for this long fails the transfer.
pub const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A URL for messages: scheme, host and path, never the query.
pub fn display_url(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Build the rustls client configuration for an endpoint's `tls` settings (through the one
/// builder, `crate::tls::client`).
pub fn tls_config(tls: Option<&Tls>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let trust = if tls.is_some_and(|t| t.insecure_skip_verify) {
        Trust::AnyServer
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(ca) = tls.and_then(|t| t.ca_file.as_ref()) {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::Tls(format!("ca_file {}: {e}", ca.display())))?;
            roots_from_pem(&pem, &mut roots)
                .map_err(|e| Error::Tls(format!("ca_file {}: {e}", ca.display())))?;
        }
        Trust::Roots(roots)
    };
    let files = tls.and_then(|t| t.cert_file.as_ref().zip(t.key_file.as_ref()));
    let identity = match files {
        Some((cert, key)) => {
            let cert_pem = std::fs::read(cert)
                .map_err(|e| Error::Tls(format!("cert_file {}: {e}", cert.display())))?;
            // The key's content never enters a message.
            let key_pem = std::fs::read(key)
                .map_err(|e| Error::Tls(format!("key_file {}: {e}", key.display())))?;
            Some((cert_pem, key_pem))
        }
        None => None,
    };
    let identity = identity
        .as_ref()
        .map(|(cert_pem, key_pem)| ClientIdentity { cert_pem, key_pem });
    client_config(trust, identity, &[b"http/1.1"]).map_err(|e| match (e, files) {
        (e @ (TlsError::ClientCertPem(_) | TlsError::ClientKeyPem), Some((cert, key))) => {
            Error::Tls(format!(
                "client certificate {} / key {}: {e}",
                cert.display(),
                key.display()
            ))
        }
        (e, _) => Error::Tls(e.to_string()),
    })
}

/// Send one request; the response body streams from the still-open connection.
pub async fn send(
    tls: &Arc<rustls::ClientConfig>,
    method: http::Method,
    url: &str,
    headers: &[(http::HeaderName, String)],
    body: Option<Vec<u8>>,
) -> Result<http::Response<Incoming>, Error> {
    let err = |detail: String| Error::Transport {
        url: display_url(url),
        detail,
    };
    let uri: http::Uri = url.parse().map_err(|_| err("not a URL".into()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(err("only http:// and https:// URLs".into())),
    };
    let host = uri.host().ok_or_else(|| err("no host".into()))?.to_string();
    let bare = host.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let tcp = tokio::time::timeout(
        CONNECT,
        tokio::net::TcpStream::connect((bare.as_str(), port)),
    )
    .await
    .map_err(|_| err("connection timed out".into()))?
    .map_err(|e| err(format!("cannot connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("rampart/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|_| err("invalid request header".into()))?;
    let work = async {
        if https {
            let name = match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(bare.clone())
                    .map_err(|_| err(format!("invalid server name {bare:?}")))?,
            };
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| err(format!("TLS handshake failed: {e}")))?;
            exchange(stream, req).await.map_err(err)
        } else {
            exchange(tcp, req).await.map_err(err)
        }
    };
    tokio::time::timeout(HEADERS + CONNECT, work)
        .await
        .map_err(|_| err("no response in time".into()))?
}

async fn exchange<S>(
    stream: S,
    req: http::Request<Full<Bytes>>,
) -> Result<http::Response<Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// The next chunk of a body, or None at its end; fails after `IDLE` without data.
pub async fn next_chunk(body: &mut Incoming, url: &str) -> Result<Option<Bytes>, Error> {
    loop {
        let frame = tokio::time::timeout(IDLE, body.frame())
            .await
            .map_err(|_| Error::Transport {
                url: display_url(url),
                detail: "transfer stalled".into(),
            })?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(Error::Transport {
                    url: display_url(url),
                    detail: format!("transfer failed: {e}"),
                })
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// A whole (small) body, refused past `limit` bytes.
pub async fn read_limited(body: &mut Incoming, url: &str, limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(body, url).await? {
        if out.len() + chunk.len() > limit {
            return Err(Error::Transport {
                url: display_url(url),
                detail: format!("response larger than {limit} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
