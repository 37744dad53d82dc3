//! The `Backend` contract, as a suite any backend can run: each check takes a factory that
//! opens the backend on a directory (reopening it must find the same data). It runs against
//! RocksDB, against `EncryptedBackend` over RocksDB with every key encrypted (what serves
//! every Secret), and against a real etcd (`etcd_backend`, one etcd process per directory).
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rampart::store::{
    Backend, Error, Event, EventKind, RangeRequest, RocksBackend, RocksConfig, WatchStream,
};

type Open = fn(&Path) -> Arc<dyn Backend>;

fn rocks(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(RocksBackend::open(RocksConfig::new(dir)).expect("open store"))
}

/// RocksDB under `dir/store`, every value sealed with the keyring in `dir/encryption` (the
/// server encrypts only its Secret prefix; here every key the suite writes is under "/").
fn encrypted(dir: &Path) -> Arc<dyn Backend> {
    use rampart::store::encrypted::{EncryptedBackend, Keyring};
    let inner =
        Arc::new(RocksBackend::open(RocksConfig::new(dir.join("store"))).expect("open store"));
    let keyring = Arc::new(Keyring::load_or_create(&dir.join("encryption")).expect("keyring"));
    Arc::new(EncryptedBackend::new(inner, keyring, vec!["/".to_string()]))
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next(w: &mut WatchStream) -> Result<Event, Error> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10s")
        .expect("watch stream ended")
}

async fn create_get_and_create_exists(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.current_revision(), 0);
    let r1 = s.create("/a", b("one")).await.unwrap();
    assert_eq!(r1, 1);
    let got = s.get("/a", None).await.unwrap().unwrap();
    assert_eq!((got.value, got.mod_revision), (b("one"), 1));
    assert!(matches!(
        s.create("/a", b("two")).await,
        Err(Error::AlreadyExists { .. })
    ));
    // A failed write consumes no revision.
    assert_eq!(s.current_revision(), 1);
    assert!(s.get("/missing", None).await.unwrap().is_none());
    assert!(matches!(
        s.create("", b("x")).await,
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        s.create("/nul\0key", b("x")).await,
        Err(Error::InvalidKey(_))
    ));
}

async fn compare_and_swap(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let r1 = s.create("/k", b("v1")).await.unwrap();
    let r2 = s.update("/k", b("v2"), r1).await.unwrap();
    assert_eq!(r2, r1 + 1);
    match s.update("/k", b("stale"), r1).await {
        Err(Error::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (r1, r2)),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(matches!(
        s.delete("/k", r1).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        s.update("/nope", b("x"), 1).await,
        Err(Error::NotFound { .. })
    ));
    let r3 = s.delete("/k", r2).await.unwrap();
    assert!(s.get("/k", None).await.unwrap().is_none());
    assert!(matches!(
        s.delete("/k", r3).await,
        Err(Error::NotFound { .. })
    ));
    // Re-creating after a delete works and starts a new life for the key.
    let r4 = s.create("/k", b("again")).await.unwrap();
    assert_eq!(r4, r3 + 1);
    assert_eq!(s.current_revision(), r4);
}

async fn concurrent_writers_get_unique_gap_free_revisions(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut tasks = Vec::new();
    for w in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..20 {
                revs.push(s.create(&format!("/c/{w}/{i}"), b("x")).await.unwrap());
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=640).collect::<Vec<u64>>());
    // Concurrent CAS on one key: exactly one winner per round.
    let mut rev = s.create("/hot", b("0")).await.unwrap();
    for round in 0..5 {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.update("/hot", b(&format!("{round}-{w}")), rev).await
            }));
        }
        let mut wins = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => wins.push(r),
                Err(Error::Conflict { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(wins.len(), 1, "round {round}");
        rev = wins[0];
    }
}

async fn range_snapshots_and_pagination(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for i in 0..10 {
        s.create(&format!("/p/{i:02}"), b(&format!("v{i}")))
            .await
            .unwrap();
    }
    s.create("/other", b("x")).await.unwrap();
    let snap = s.current_revision();
    // Change the world after the snapshot.
    let k3 = s.get("/p/03", None).await.unwrap().unwrap();
    s.update("/p/03", b("changed"), k3.mod_revision)
        .await
        .unwrap();
    let k5 = s.get("/p/05", None).await.unwrap().unwrap();
    s.delete("/p/05", k5.mod_revision).await.unwrap();
    s.create("/p/99", b("new")).await.unwrap();

    // Page through the old snapshot, 3 at a time.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .range(RangeRequest {
                prefix: "/p/".into(),
                start_after: after.clone(),
                limit: 3,
                revision: Some(snap),
            })
            .await
            .unwrap();
        assert_eq!(page.revision, snap);
        assert!(page.items.len() <= 3);
        seen.extend(
            page.items
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone())),
        );
        if !page.more {
            break;
        }
        after = page.items.last().map(|kv| kv.key.clone());
    }
    let expect: Vec<_> = (0..10)
        .map(|i| (format!("/p/{i:02}"), b(&format!("v{i}"))))
        .collect();
    assert_eq!(seen, expect);

    // The latest view reflects the later writes.
    let now = s
        .range(RangeRequest {
            prefix: "/p/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let keys: Vec<_> = now.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys.len(), 10);
    assert!(keys.contains(&"/p/99") && !keys.contains(&"/p/05"));
    assert_eq!(now.items[3].value, b("changed"));
    assert!(!now.more);
    // Old point reads too.
    assert_eq!(
        s.get("/p/03", Some(snap)).await.unwrap().unwrap().value,
        b("v3")
    );
    assert!(s.get("/p/99", Some(snap)).await.unwrap().is_none());
    assert!(matches!(
        s.get("/p/03", Some(snap + 100)).await,
        Err(Error::FutureRevision { .. })
    ));
    // A limit equal to the count reports no more.
    let exact = s
        .range(RangeRequest {
            prefix: "/p/".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!exact.more && exact.items.len() == 10);
}

/// Build a history of creates, updates and deletes; return every event in order.
async fn build_history(s: &Arc<dyn Backend>) -> Vec<Event> {
    let mut events = Vec::new();
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..60u64 {
        let key = format!("/h/{}", i % 7);
        let (kind, value, rev, prev_value) = match live.get(&key).copied() {
            None => {
                let v = b(&format!("c{i}"));
                let rev = s.create(&key, v.clone()).await.unwrap();
                (EventKind::Create, v, rev, None)
            }
            Some(cur) if i % 5 == 0 => {
                let last = s.get(&key, None).await.unwrap().unwrap().value;
                (
                    EventKind::Delete,
                    last,
                    s.delete(&key, cur).await.unwrap(),
                    None,
                )
            }
            Some(cur) => {
                let last = s.get(&key, None).await.unwrap().unwrap().value;
                let v = b(&format!("u{i}"));
                let rev = s.update(&key, v.clone(), cur).await.unwrap();
                (EventKind::Update, v, rev, Some(last))
            }
        };
        if kind == EventKind::Delete {
            live.remove(&key);
        } else {
            live.insert(key.clone(), rev);
        }
        events.push(Event {
            kind,
            key,
            value,
            revision: rev,
            prev_value,
        });
        // Writes outside the prefix must not show up in its watches.
        if i % 10 == 0 {
            s.create(&format!("/x/{i}"), b("noise")).await.unwrap();
        }
    }
    events
}

async fn watch_resumes_from_every_revision(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let history = build_history(&s).await;
    let last = history.last().unwrap().revision;
    for from in 0..=last {
        let expect: Vec<&Event> = history.iter().filter(|e| e.revision > from).collect();
        let mut w = s.watch("/h/", from).await.unwrap();
        for want in &expect {
            let got = next(&mut w).await.unwrap();
            assert_eq!(&&got, want, "watch from {from}");
        }
    }
    // Replay then live, without a gap or duplicate.
    let mut w = s.watch("/h/", last - 3).await.unwrap();
    let cur = s.get("/h/1", None).await;
    let live_rev = match cur.unwrap() {
        Some(kv) => s.update("/h/1", b("live"), kv.mod_revision).await.unwrap(),
        None => s.create("/h/1", b("live")).await.unwrap(),
    };
    let mut revs = Vec::new();
    for _ in 0..4 {
        revs.push(next(&mut w).await.unwrap().revision);
    }
    let tail: Vec<u64> = history
        .iter()
        .filter(|e| e.revision > last - 3)
        .map(|e| e.revision)
        .chain([live_rev])
        .collect();
    assert_eq!(revs, tail);
    // A watch from the future waits for that revision.
    let mut future = s.watch("/h/", live_rev + 1).await.unwrap();
    let kv = s.get("/h/1", None).await.unwrap().unwrap();
    s.update("/h/1", b("a"), kv.mod_revision).await.unwrap();
    let r = s.update("/h/1", b("b"), live_rev + 1).await.unwrap();
    assert_eq!(next(&mut future).await.unwrap().revision, r);
}

async fn compaction_makes_old_revisions_gone(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let history = build_history(&s).await;
    let mid = history[30].revision;
    let before = s
        .range(RangeRequest {
            prefix: "/h/".into(),
            revision: Some(mid),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    s.compact(mid).await.unwrap();
    assert_eq!(s.compacted_revision(), mid);
    assert!(matches!(
        s.watch("/h/", mid - 1).await.err(),
        Some(Error::Compacted { .. })
    ));
    assert!(matches!(
        s.get("/h/1", Some(mid - 1)).await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        s.range(RangeRequest {
            prefix: "/h/".into(),
            revision: Some(1),
            ..Default::default()
        })
        .await,
        Err(Error::Compacted { .. })
    ));
    // The compacted revision itself is still readable and watchable.
    let at_mid = s
        .range(RangeRequest {
            prefix: "/h/".into(),
            revision: Some(mid),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(at_mid, before);
    let mut w = s.watch("/h/", mid).await.unwrap();
    let first_after = history.iter().find(|e| e.revision > mid).unwrap();
    assert_eq!(&next(&mut w).await.unwrap(), first_after);
    // Compacting backwards is a no-op; forwards past the present is refused.
    s.compact(1).await.unwrap();
    assert_eq!(s.compacted_revision(), mid);
    assert!(s.compact(s.current_revision() + 5).await.is_err());
}

async fn restart_keeps_data_revision_and_compaction(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let (rev, compacted, all) = {
        let s = open(dir.path());
        build_history(&s).await;
        s.compact(20).await.unwrap();
        let all = s
            .range(RangeRequest {
                prefix: "/".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .items;
        (s.current_revision(), s.compacted_revision(), all)
    };
    let s = open(dir.path());
    assert_eq!(s.current_revision(), rev);
    assert_eq!(s.compacted_revision(), compacted);
    let again = s
        .range(RangeRequest {
            prefix: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(again, all);
    assert_eq!(s.create("/after-restart", b("x")).await.unwrap(), rev + 1);
}

async fn slow_watcher_is_closed_without_blocking_writers(dir: &Path) {
    let mut cfg = RocksConfig::new(dir);
    cfg.watch_buffer = 64;
    let s: Arc<dyn Backend> = Arc::new(RocksBackend::open(cfg).unwrap());
    let mut slow = s.watch("/s/", 0).await.unwrap();
    let mut fast = s.watch("/s/", 0).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 200 {
            next(&mut fast).await.unwrap();
            n += 1;
        }
        n
    });
    let writes = tokio::time::timeout(Duration::from_secs(30), async {
        for i in 0..200 {
            s.create(&format!("/s/{i}"), b("x")).await.unwrap();
        }
    });
    writes
        .await
        .expect("writers were blocked by a slow watcher");
    assert_eq!(reader.await.unwrap(), 200);
    let mut got = 0;
    let err = loop {
        match next(&mut slow).await {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::WatchTooSlow), "got {err}");
    assert!(got <= 64, "a slow watcher got {got} events past its buffer");
}

async fn compaction_bounds_stored_versions(dir: &Path) {
    let s = RocksBackend::open(RocksConfig::new(dir)).unwrap();
    let mut revs = BTreeMap::new();
    for k in 0..20 {
        revs.insert(k, s.create(&format!("/b/{k}"), b("0")).await.unwrap());
    }
    for round in 0..50 {
        for k in 0..20 {
            let r = revs[&k];
            revs.insert(
                k,
                s.update(&format!("/b/{k}"), b(&round.to_string()), r)
                    .await
                    .unwrap(),
            );
        }
        if round % 10 == 9 {
            s.compact(s.current_revision()).await.unwrap();
            // Only the newest version of each key survives a full compaction.
            assert_eq!(s.stored_versions().unwrap(), 20);
        }
    }
}

macro_rules! suite {
    ($open:ident: $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            super::$name(super::$open).await;
        }
    )*};
}

mod rocksdb_backend {
    suite!(rocks:
        create_get_and_create_exists,
        compare_and_swap,
        concurrent_writers_get_unique_gap_free_revisions,
        range_snapshots_and_pagination,
        watch_resumes_from_every_revision,
        compaction_makes_old_revisions_gone,
        restart_keeps_data_revision_and_compaction,
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_watcher_is_closed_without_blocking_writers() {
        let dir = tempfile::tempdir().unwrap();
        super::slow_watcher_is_closed_without_blocking_writers(dir.path()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_bounds_stored_versions() {
        let dir = tempfile::tempdir().unwrap();
        super::compaction_bounds_stored_versions(dir.path()).await;
    }
}

mod encrypted_backend {
    use super::*;

    suite!(encrypted:
        create_get_and_create_exists,
        compare_and_swap,
        concurrent_writers_get_unique_gap_free_revisions,
        range_snapshots_and_pagination,
        watch_resumes_from_every_revision,
        compaction_makes_old_revisions_gone,
        restart_keeps_data_revision_and_compaction,
    );

    /// The suite above would pass over a backend that forgot to encrypt: the inner store must
    /// hold only sealed values.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_are_sealed_in_the_inner_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = encrypted(dir.path());
        s.create("/secret", b("plaintext-canary")).await.unwrap();
        assert_eq!(
            s.get("/secret", None).await.unwrap().unwrap().value,
            b("plaintext-canary")
        );
        drop(s);
        let raw = RocksBackend::open(RocksConfig::new(dir.path().join("store"))).unwrap();
        let stored = raw.get("/secret", None).await.unwrap().unwrap().value;
        assert!(
            !stored.windows(16).any(|w| w == b"plaintext-canary"),
            "stored in the clear: {stored:?}"
        );
        assert!(
            rampart::store::encrypted::any_sealed(&raw, &["/".to_string()])
                .await
                .unwrap()
        );
    }
}

/// The same contract over a real etcd (Debian's `etcd-server`), one etcd per data directory:
/// reopening the backend on a directory reconnects to that directory's etcd, which is what a
/// server restart against an external datastore looks like.
mod etcd_backend {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use rampart::store::{Backend, EtcdBackend, EtcdConfig};

    struct Etcd {
        endpoint: String,
        _child: Child,
    }

    fn running() -> &'static Mutex<HashMap<PathBuf, Etcd>> {
        static RUNNING: OnceLock<Mutex<HashMap<PathBuf, Etcd>>> = OnceLock::new();
        RUNNING.get_or_init(|| Mutex::new(HashMap::new()))
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// Starts (once per directory) an etcd serving only loopback.
    fn endpoint(dir: &Path) -> Option<String> {
        let mut map = running().lock().unwrap();
        if let Some(e) = map.get(dir) {
            return Some(e.endpoint.clone());
        }
        let bin = which("etcd")?;
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--data-dir",
            dir.join("etcd").to_str().unwrap(),
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // The etcd dies with the test process (nextest runs each test in its own process).
        // SAFETY: the hook only calls prctl(2), which is async-signal-safe, between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start etcd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        map.insert(
            dir.to_path_buf(),
            Etcd {
                endpoint: endpoint.clone(),
                _child: child,
            },
        );
        Some(endpoint)
    }

    fn which(name: &str) -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    }

    pub(super) fn etcd(dir: &Path) -> Arc<dyn Backend> {
        let Some(endpoint) = endpoint(dir) else {
            panic!("etcd (Debian package etcd-server) is needed for the etcd backend suite");
        };
        let cfg = EtcdConfig {
            endpoints: vec![endpoint],
            ..Default::default()
        };
        let backend = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(EtcdBackend::connect(&cfg))
        })
        .expect("connect to etcd");
        Arc::new(backend)
    }

    macro_rules! etcd_suite {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::super::$name(super::etcd).await;
            }
        )*};
    }

    mod conformance {
        etcd_suite!(
            create_get_and_create_exists,
            compare_and_swap,
            concurrent_writers_get_unique_gap_free_revisions,
            range_snapshots_and_pagination,
            watch_resumes_from_every_revision,
            compaction_makes_old_revisions_gone,
            restart_keeps_data_revision_and_compaction,
        );
    }
}
