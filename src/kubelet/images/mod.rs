//! Images from registries: what containerd's CRI image service does for k3s, on top of the
//! local content-addressed store (`runtime::image`).
//!
//! - `registries`: k3s's `registries.yaml` (mirrors, rewrites, per-host auth and TLS);
//! - `transport`: a small HTTP/1.1 client (hyper + rustls/ring), one connection per request;
//! - `distribution`: the OCI distribution API and registry token authentication;
//! - `pull`: manifest (index → linux/<this arch>), config and layers, each digest-verified
//!   while it streams, then unpacked and committed to the store as an import would be;
//! - `gc`: image garbage collection at disk thresholds and the Node's `status.images`.
//!
//! Invariants: nothing enters the store unverified (a registry serving a wrong digest gives
//! a clear error and changes nothing); concurrent pulls of the same reference with the same
//! credentials are one pull; credentials never appear in errors, events or logs.

pub mod distribution;
pub mod gc;
pub mod pull;
pub mod registries;
pub mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::kubelet::runtime::image::{self, Image, Store};
use registries::{Auth, Registries, Tls};

/// Why a pull failed; the kind maps to what upstream reports.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Transport(String),
    /// The registry served something wrong (digest, size, architecture, format).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("image store: {0}")]
    Store(String),
}

impl PullError {
    /// Which error to report when every endpoint failed: the most telling one.
    fn rank(&self) -> u8 {
        match self {
            PullError::Invalid(_) | PullError::Store(_) | PullError::InvalidName(_) => 4,
            PullError::Unauthorized(_) => 3,
            PullError::NotFound(_) => 2,
            PullError::Transport(_) => 1,
        }
    }
}

impl From<image::Error> for PullError {
    fn from(e: image::Error) -> Self {
        match e {
            image::Error::Invalid(m) => PullError::Invalid(m),
            e => PullError::Store(e.to_string()),
        }
    }
}

/// Credentials from a pod's pull secrets, by registry (`docker.io`, `*.example.com`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Keyring(pub Vec<(String, Auth)>);

impl Keyring {
    /// The credentials that apply to `registry`, in order.
    pub fn lookup(&self, registry: &str) -> Vec<Auth> {
        self.0
            .iter()
            .filter(|(pattern, _)| registry_matches(pattern, registry))
            .map(|(_, a)| a.clone())
            .collect()
    }
}

/// A `.dockerconfigjson` key (`https://index.docker.io/v1/`, `reg:5000`, `*.example.com`)
/// against a registry host as in a normalised reference (`docker.io`, `reg:5000`).
pub fn registry_matches(pattern: &str, registry: &str) -> bool {
    let p = pattern
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let p = p.split('/').next().unwrap_or(p).to_ascii_lowercase();
    let canon = |h: &str| -> String {
        match h {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
                "docker.io".into()
            }
            h => h.to_string(),
        }
    };
    let (p, r) = (canon(&p), canon(&registry.to_ascii_lowercase()));
    if let Some(suffix) = p.strip_prefix("*.") {
        // One label, as upstream's keyring: `*.example.com` matches `a.example.com`.
        return r
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.'));
    }
    p == r
}

/// A pulled image and what the pull moved.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: Image,
    /// Bytes of the image's content (config and compressed layers), as upstream reports.
    pub size: u64,
}

type Inflight = Arc<tokio::sync::OnceCell<Result<Pulled, PullError>>>;

/// Pulls into one store with one registry configuration; shared by every pod worker.
pub struct Puller {
    pub store: Store,
    pub registries: Arc<Registries>,
    tls: Mutex<HashMap<Option<Tls>, Arc<rustls::ClientConfig>>>,
    inflight: Mutex<HashMap<(String, Keyring), Inflight>>,
}

impl Puller {
    pub fn new(store: Store, registries: Arc<Registries>) -> Puller {
        Puller {
            store,
            registries,
            tls: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Pull `reference` (any form docker accepts); concurrent calls for the same reference and
    /// credentials wait for one pull.
    pub async fn pull(&self, reference: &str, keyring: &Keyring) -> Result<Pulled, PullError> {
        let norm = image::reference::normalize(reference)
            .map_err(|e| PullError::InvalidName(e.to_string()))?;
        let key = (norm.clone(), keyring.clone());
        let cell = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let out = cell
            .get_or_init(|| pull::pull(self, &norm, keyring))
            .await
            .clone();
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        out
    }

    fn tls(&self, tls: Option<&Tls>) -> Result<Arc<rustls::ClientConfig>, PullError> {
        let key = tls.cloned();
        if let Some(c) = self.tls.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(c.clone());
        }
        let c = transport::tls_config(tls).map_err(|e| PullError::Transport(e.to_string()))?;
        self.tls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two concurrent pulls of one reference are one pull: a loopback server that answers
    /// every connection with a slow 404 sees the connections of a single pull (the mirror
    /// endpoint over HTTP, then the default endpoint's TLS attempt), not twice that.
    #[tokio::test]
    async fn concurrent_pulls_are_one() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    return;
                };
                h.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf).await;
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    let _ = c
                        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let host = format!("127.0.0.1:{port}");
        let reg = Registries::parse(&format!(
            "mirrors:\n  \"{host}\":\n    endpoint: [\"http://{host}\"]\n"
        ))
        .unwrap();
        let p = Puller::new(store, Arc::new(reg));
        let image = format!("{host}/x:1");
        let k = Keyring::default();
        let (a, b) = tokio::join!(p.pull(&image, &k), p.pull(&image, &k));
        assert!(matches!(a, Err(PullError::NotFound(_))), "{a:?}");
        assert!(matches!(b, Err(PullError::NotFound(_))), "{b:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // Once finished, a new pull asks again.
        let _ = p.pull(&image, &k).await;
        assert_eq!(hits.load(Ordering::SeqCst), 4);
        server.abort();
    }

    #[test]
    fn keyring_matching() {
        assert!(registry_matches("https://index.docker.io/v1/", "docker.io"));
        assert!(registry_matches("docker.io", "docker.io"));
        assert!(registry_matches("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!registry_matches("127.0.0.1:5000", "127.0.0.1:5001"));
        assert!(registry_matches("*.example.com", "a.example.com"));
        assert!(!registry_matches("*.example.com", "a.b.example.com"));
        assert!(!registry_matches("*.example.com", "example.com"));
    }
}
