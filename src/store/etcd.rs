//! The etcd backend: the same [`Backend`] contract served by an external etcd v3 cluster, so
//! several servers can share one datastore (k3s's `--datastore-endpoint`).
//!
//! Mapping (etcd's v3 API is what the contract was shaped after):
//! - revisions: a fresh etcd is at revision 1 with no keys, so Rampart's revision is etcd's
//!   minus one (the first write is revision 1 on both backends). "Exactly one per write" holds
//!   when the etcd keyspace is Rampart's alone, as upstream assumes for kube-apiserver;
//! - create/update/delete are single transactions comparing `create_revision == 0` or
//!   `mod_revision == expected`, so conflicts are decided by etcd, never read-then-write;
//! - range pages start after a key (`start_after` + NUL) and read at one revision;
//! - watches ask for `prev_kv`, so deletes carry the last value and updates their previous
//!   one; an event whose `create_revision == mod_revision` is a create;
//! - compaction: our `compact(r)` keeps `r` readable, exactly etcd's rule. The compacted
//!   revision is learnt at open (a watch from etcd revision 1 is answered with etcd's
//!   `compact_revision`) and kept up to date by our own compactions and by `Compacted` errors,
//!   since etcd has no call that reports it.
//!
//! Invariant: errors from etcd never leak credentials (the endpoint URLs and TLS files are
//! not part of any message); a lost connection is `Error::Storage`, which the apiserver
//! answers with 500/503 and retries nothing on its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use super::{
    check_key, Backend, Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result,
    Revision, WatchStream,
};

/// How to reach etcd (k3s's `--datastore-*` flags).
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    /// `https://host:2379` or `http://host:2379` endpoints.
    pub endpoints: Vec<String>,
    /// PEM files for TLS: the CA that signed etcd's serving cert, and our client cert/key.
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

/// etcd's revision of a fresh cluster (no key written yet).
const BASE: i64 = 1;
/// Bound on one gRPC message (a LIST page of big objects).
const MAX_MESSAGE: usize = 256 << 20;

pub struct EtcdBackend {
    client: Client,
    current: Arc<AtomicU64>,
    compacted: AtomicU64,
}

fn ours(etcd_rev: i64) -> Revision {
    u64::try_from(etcd_rev - BASE).unwrap_or(0)
}

fn theirs(rev: Revision) -> i64 {
    i64::try_from(rev)
        .unwrap_or(i64::MAX - BASE)
        .saturating_add(BASE)
}

fn storage(e: etcd_client::Error) -> Error {
    Error::Storage(format!("etcd: {e}"))
}

fn key_of(kv: &etcd_client::KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: key_of(kv),
        value: Bytes::copy_from_slice(kv.value()),
        mod_revision: ours(kv.mod_revision()),
    }
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Storage(format!("{}: {e}", path.display())))
}

/// The smallest key after every key that starts with `prefix` (etcd's `with_prefix` end).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdBackend {
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Storage("no etcd endpoint given".into()));
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if cfg.ca_file.is_some() || cfg.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &cfg.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca)?));
            }
            match (&cfg.cert_file, &cfg.key_file) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(read_pem(c)?, read_pem(k)?));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Storage(
                        "--datastore-certfile and --datastore-keyfile go together".into(),
                    ))
                }
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(storage)?;
        let backend = EtcdBackend {
            client,
            current: Arc::new(AtomicU64::new(0)),
            compacted: AtomicU64::new(0),
        };
        backend.refresh_revision().await?;
        backend.learn_compaction().await?;
        Ok(backend)
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn saw(&self, etcd_rev: i64) {
        self.current.fetch_max(ours(etcd_rev), Ordering::SeqCst);
    }

    fn saw_compaction(&self, etcd_rev: i64) {
        self.compacted.fetch_max(ours(etcd_rev), Ordering::SeqCst);
    }

    async fn refresh_revision(&self) -> Result<()> {
        let resp = self
            .kv()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(storage)?;
        if let Some(h) = resp.header() {
            self.saw(h.revision());
        }
        Ok(())
    }

    /// etcd tells a watcher from a compacted revision where history now starts. Only asked
    /// when a read at etcd's first revision says history was compacted at all (a watch that
    /// is not compacted would never answer).
    async fn learn_compaction(&self) -> Result<()> {
        let probe = self
            .kv()
            .get(
                "\0",
                Some(GetOptions::new().with_revision(BASE).with_count_only()),
            )
            .await;
        match probe {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("compacted") => {}
            Err(e) => return Err(storage(e)),
        }
        let mut stream = self
            .client
            .watch_client()
            .watch("\0", Some(WatchOptions::new().with_start_revision(BASE)))
            .await
            .map_err(storage)?;
        // First the "created" answer, then the cancellation carrying `compact_revision`.
        for _ in 0..2 {
            let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .map_err(|_| Error::Storage("etcd: no answer to a watch".into()))?
                .map_err(storage)?;
            let Some(resp) = msg else { break };
            if resp.compact_revision() > 0 {
                self.saw_compaction(resp.compact_revision());
                break;
            }
        }
        Ok(())
    }

    /// Maps etcd's "required revision has been compacted" to our error. A revision past the
    /// one this process last saw may have been written by another server on the same etcd:
    /// ask etcd before calling it a future revision.
    async fn check_revision(&self, revision: Option<Revision>) -> Result<()> {
        if let Some(r) = revision {
            let compacted = self.compacted.load(Ordering::SeqCst);
            if r < compacted {
                return Err(Error::Compacted {
                    requested: r,
                    compacted,
                });
            }
            if r > self.current.load(Ordering::SeqCst) {
                self.refresh_revision().await?;
            }
            let current = self.current.load(Ordering::SeqCst);
            if r > current {
                return Err(Error::FutureRevision {
                    requested: r,
                    current,
                });
            }
        }
        Ok(())
    }

    fn read_error(&self, e: etcd_client::Error, requested: Option<Revision>) -> Error {
        let text = e.to_string();
        if text.contains("compacted") {
            let compacted = self.compacted.load(Ordering::SeqCst);
            return Error::Compacted {
                requested: requested.unwrap_or(0),
                compacted,
            };
        }
        if text.contains("future revision") {
            return Error::FutureRevision {
                requested: requested.unwrap_or(0),
                current: self.current.load(Ordering::SeqCst),
            };
        }
        storage(e)
    }

    /// One compare-and-write transaction; on failure, the key's current state (for the error).
    async fn cas(
        &self,
        key: &str,
        compare: Compare,
        op: TxnOp,
    ) -> Result<std::result::Result<Revision, Option<etcd_client::KeyValue>>> {
        let txn = Txn::new()
            .when([compare])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.kv().txn(txn).await.map_err(storage)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        self.saw(rev);
        if resp.succeeded() {
            return Ok(Ok(ours(rev)));
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        Ok(Err(current))
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        check_key(key)?;
        self.check_revision(revision).await?;
        let mut opts = GetOptions::new();
        if let Some(r) = revision {
            opts = opts.with_revision(theirs(r));
        }
        let resp = self
            .kv()
            .get(key, Some(opts))
            .await
            .map_err(|e| self.read_error(e, revision))?;
        if let Some(h) = resp.header() {
            self.saw(h.revision());
        }
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.check_revision(req.revision).await?;
        let start = match &req.start_after {
            Some(after) => {
                let mut k = after.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => req.prefix.as_bytes().to_vec(),
        };
        let mut opts = GetOptions::new().with_range(prefix_end(&req.prefix));
        if req.limit > 0 {
            opts = opts.with_limit(i64::try_from(req.limit).unwrap_or(i64::MAX));
        }
        // Every page of one LIST reads at one revision: the first page's, if none was given.
        let at = match req.revision {
            Some(r) => r,
            None => {
                self.refresh_revision().await?;
                self.current.load(Ordering::SeqCst)
            }
        };
        opts = opts.with_revision(theirs(at));
        let resp = self
            .kv()
            .get(start, Some(opts))
            .await
            .map_err(|e| self.read_error(e, Some(at)))?;
        Ok(RangeResponse {
            items: resp.kvs().iter().map(to_kv).collect(),
            revision: at,
            more: resp.more(),
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        check_key(key)?;
        match self
            .cas(
                key,
                Compare::create_revision(key, CompareOp::Equal, 0),
                TxnOp::put(key, value.to_vec(), None),
            )
            .await?
        {
            Ok(rev) => Ok(rev),
            Err(_) => Err(Error::AlreadyExists { key: key.into() }),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        check_key(key)?;
        match self
            .cas(
                key,
                Compare::mod_revision(key, CompareOp::Equal, theirs(expected)),
                TxnOp::put(key, value.to_vec(), None),
            )
            .await?
        {
            Ok(rev) => Ok(rev),
            Err(None) => Err(Error::NotFound { key: key.into() }),
            Err(Some(kv)) => Err(Error::Conflict {
                key: key.into(),
                expected,
                current: ours(kv.mod_revision()),
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        check_key(key)?;
        match self
            .cas(
                key,
                Compare::mod_revision(key, CompareOp::Equal, theirs(expected)),
                TxnOp::delete(key, None),
            )
            .await?
        {
            Ok(rev) => Ok(rev),
            Err(None) => Err(Error::NotFound { key: key.into() }),
            Err(Some(kv)) => Err(Error::Conflict {
                key: key.into(),
                expected,
                current: ours(kv.mod_revision()),
            }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let compacted = self.compacted.load(Ordering::SeqCst);
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_start_revision(theirs(after) + 1)
            .with_prev_key();
        let stream = self
            .client
            .watch_client()
            .watch(prefix, Some(opts))
            .await
            .map_err(storage)?;
        let current = self.current.clone();
        let events = stream.flat_map(move |resp| {
            let out: Vec<Result<Event>> = match resp {
                Err(e) => vec![Err(storage(e))],
                Ok(r) if r.compact_revision() > 0 => vec![Err(Error::Compacted {
                    requested: after,
                    compacted: ours(r.compact_revision()),
                })],
                Ok(r) if r.canceled() => vec![Err(Error::Storage(format!(
                    "etcd cancelled the watch: {}",
                    r.cancel_reason()
                )))],
                Ok(r) => r
                    .events()
                    .iter()
                    .filter_map(|e| {
                        let kv = e.kv()?;
                        current.fetch_max(ours(kv.mod_revision()), Ordering::SeqCst);
                        let prev = e.prev_kv().map(|p| Bytes::copy_from_slice(p.value()));
                        Some(Ok(match e.event_type() {
                            EventType::Delete => Event {
                                kind: EventKind::Delete,
                                key: key_of(kv),
                                value: prev.unwrap_or_default(),
                                revision: ours(kv.mod_revision()),
                                prev_value: None,
                            },
                            EventType::Put if kv.create_revision() == kv.mod_revision() => Event {
                                kind: EventKind::Create,
                                key: key_of(kv),
                                value: Bytes::copy_from_slice(kv.value()),
                                revision: ours(kv.mod_revision()),
                                prev_value: None,
                            },
                            EventType::Put => Event {
                                kind: EventKind::Update,
                                key: key_of(kv),
                                value: Bytes::copy_from_slice(kv.value()),
                                revision: ours(kv.mod_revision()),
                                prev_value: prev,
                            },
                        }))
                    })
                    .collect(),
            };
            futures::stream::iter(out)
        });
        // A stream ends after its first error, as the contract says.
        let mut failed = false;
        let bounded = events.take_while(move |item| {
            let go = !failed;
            failed = failed || item.is_err();
            futures::future::ready(go)
        });
        Ok(bounded.boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        if revision <= self.compacted.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.refresh_revision().await?;
        let current = self.current.load(Ordering::SeqCst);
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        match self.kv().compact(theirs(revision), None).await {
            Ok(_) => {}
            // Another server compacted further already: that is fine.
            Err(e) if e.to_string().contains("compacted") => {}
            Err(e) => return Err(storage(e)),
        }
        self.saw_compaction(theirs(revision));
        Ok(())
    }

    fn current_revision(&self) -> Revision {
        self.current.load(Ordering::SeqCst)
    }

    fn compacted_revision(&self) -> Revision {
        self.compacted.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("/"), b"0".to_vec());
        assert_eq!(ours(1), 0);
        assert_eq!(theirs(0), 1);
        assert_eq!(ours(theirs(41)), 41);
    }
}
