//! Authorising kubelet API requests by asking the apiserver (upstream's kubelet
//! `--authorization-mode=Webhook`): a `SubjectAccessReview` for the verb and `nodes`
//! subresource of the request (`server::attributes`) on this node, cached for upstream's
//! defaults — allowed answers 5 minutes, denials 30 seconds — so a stream of requests costs
//! one review. The cache is bounded: when full it is cleared (entries are cheap to re-ask).
//! An apiserver that cannot be asked means "denied" (fail closed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::tls::Peer;

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
const MAX_ENTRIES: usize = 4096;

/// What is asked: `verb` on `nodes/<subresource>` named `node`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ask {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// A cached answer: allowed, the reason, valid until.
type Answer = (bool, String, Instant);

pub struct Authorizer {
    node: String,
    clients: watch::Receiver<kube::Client>,
    cache: Mutex<HashMap<(Peer, Ask), Answer>>,
}

impl Authorizer {
    pub fn new(node: String, clients: watch::Receiver<kube::Client>) -> Authorizer {
        Authorizer {
            node,
            clients,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok(())` if allowed, else the reason to show in the 403.
    pub async fn check(&self, peer: &Peer, ask: &Ask) -> Result<(), String> {
        let key = (peer.clone(), ask.clone());
        if let Ok(c) = self.cache.lock() {
            if let Some((allowed, reason, until)) = c.get(&key) {
                if *until > Instant::now() {
                    return if *allowed {
                        Ok(())
                    } else {
                        Err(reason.clone())
                    };
                }
            }
        }
        let (allowed, reason) = match self.review(peer, ask).await {
            Ok(answer) => answer,
            // Not cached: the next request asks again.
            Err(e) => return Err(format!("cannot ask the API server: {e}")),
        };
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= MAX_ENTRIES {
                c.clear();
            }
            c.insert(key, (allowed, reason.clone(), Instant::now() + ttl));
        }
        if allowed {
            Ok(())
        } else {
            Err(reason)
        }
    }

    async fn review(&self, peer: &Peer, ask: &Ask) -> Result<(bool, String), String> {
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": peer.user,
                "groups": peer.groups,
                "resourceAttributes": {
                    "verb": ask.verb,
                    "version": "v1",
                    "resource": "nodes",
                    "subresource": ask.subresource,
                    "name": self.node,
                },
            },
        });
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let req = http::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .map_err(|e| e.to_string())?;
        let client = self.clients.borrow().clone();
        let answer: Value = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let allowed = answer["status"]["allowed"].as_bool().unwrap_or(false);
        let reason = answer["status"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Ok((allowed, reason))
    }
}
