//! Crash safety: a child process writes with many concurrent writers and prints every write the
//! store acknowledged; we SIGKILL it at random moments, reopen the store, and check that every
//! acknowledged write is there, that history is gap-free with nothing half-applied, and that the
//! store keeps working. Repeated for many cycles on the same directory.
//!
//! The child is this same test binary, re-executed on the ignored `crash_child_process` test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rampart::store::{Backend, RocksBackend, RocksConfig};
use rand::Rng;

const WRITERS: usize = 32;
const CYCLES: usize = 24;
const CHILD_ENV: &str = "RAMPART_CRASH_CHILD_DIR";

/// Value format: `w<writer>:<sequence>`; the sequence of one key grows by one per write.
fn parse_value(v: &[u8]) -> (usize, u64) {
    let s = std::str::from_utf8(v).expect("utf-8 value");
    let (w, n) = s
        .strip_prefix('w')
        .and_then(|s| s.split_once(':'))
        .unwrap_or_else(|| panic!("half-written value {s:?}"));
    (w.parse().unwrap(), n.parse().unwrap())
}

#[test]
#[ignore = "entry point of the child process that crash_recovery kills; not a test by itself"]
fn crash_child_process() {
    let dir = std::env::var(CHILD_ENV).expect("run only by crash_recovery");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(RocksBackend::open(RocksConfig::new(&dir)).unwrap());
        println!("READY");
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("/crash/w{w:02}");
                loop {
                    let current = store.get(&key, None).await.unwrap();
                    let seq = current
                        .as_ref()
                        .map_or(0, |kv| parse_value(&kv.value).1 + 1);
                    let value = Bytes::from(format!("w{w}:{seq}"));
                    let rev = match current {
                        None => store.create(&key, value).await.unwrap(),
                        Some(kv) => store.update(&key, value, kv.mod_revision).await.unwrap(),
                    };
                    println!("ACK {key} {rev} {seq}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_recovery_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_total = 0usize;
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args(["crash_child_process", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        let run_for = rand::rng().random_range(150..700);
        tokio::time::sleep(Duration::from_millis(run_for)).await;
        // SIGKILL: no destructor, no flush, no goodbye.
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        assert!(
            lines.iter().any(|l| l == "READY"),
            "cycle {cycle}: child never opened the store"
        );
        // Highest acknowledged (revision, sequence) per key.
        let mut acked: HashMap<String, (u64, u64)> = HashMap::new();
        for line in lines.iter().filter_map(|l| l.strip_prefix("ACK ")) {
            let mut parts = line.split(' ');
            let (Some(key), Some(rev), Some(seq)) = (parts.next(), parts.next(), parts.next())
            else {
                continue; // the kill can cut the last line short
            };
            let (Ok(rev), Ok(seq)) = (rev.parse::<u64>(), seq.parse::<u64>()) else {
                continue;
            };
            let e = acked.entry(key.to_string()).or_insert((rev, seq));
            if rev > e.0 {
                *e = (rev, seq);
            }
            acked_total += 1;
        }

        let store = RocksBackend::open(RocksConfig::new(dir.path()))
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        let current = store.current_revision();
        for (key, (rev, seq)) in &acked {
            let kv = store
                .get(key, None)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged key {key} is missing"));
            assert!(
                kv.mod_revision >= *rev,
                "cycle {cycle}: {key} went back from acknowledged revision {rev} to {}",
                kv.mod_revision
            );
            let at = store.get(key, Some(*rev)).await.unwrap().unwrap();
            assert_eq!(at.mod_revision, *rev, "cycle {cycle}: {key}");
            assert_eq!(parse_value(&at.value).1, *seq, "cycle {cycle}: {key} value");
        }
        // The whole history: revisions 1..=current, each once, each value whole, and each
        // key's sequence growing by exactly one per write.
        let mut w = store.watch("/", 0).await.unwrap();
        let mut expect_rev = 1;
        let mut seqs: HashMap<String, u64> = HashMap::new();
        while expect_rev <= current {
            let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(ev.revision, expect_rev, "cycle {cycle}: history has a gap");
            let (_, seq) = parse_value(&ev.value);
            if let Some(prev) = seqs.insert(ev.key.clone(), seq) {
                assert_eq!(seq, prev + 1, "cycle {cycle}: {} skipped a write", ev.key);
            }
            expect_rev += 1;
        }
        drop(w);
        // Still writable, with the next revision.
        let probe = format!("/probe/{cycle}");
        assert_eq!(
            store
                .create(&probe, Bytes::from_static(b"w0:0"))
                .await
                .unwrap(),
            current + 1
        );
        drop(store);
    }
    assert!(
        acked_total > CYCLES * 10,
        "too few acknowledged writes ({acked_total}) to mean anything"
    );
    println!("{CYCLES} kill cycles, {acked_total} acknowledged writes verified");
}
