//! Memory-exhaustion attacks on a running server (issue 12, items 8 and 9), each under an
//! address-space cap (`prlimit`) so a regression fails the test instead of taking the machine
//! down:
//! - hundreds of watches that are never read, multiplexed on one HTTP/2 connection over a
//!   namespace holding several MB of ConfigMaps (namespaced, cluster-wide with label and field
//!   selectors, with `sendInitialEvents`): the server's RSS stays within a bound and a GET
//!   stays fast; closing the connection gives every watch place back;
//! - the per-user and global watch caps answer 429 TooManyRequests with a Status and
//!   `Retry-After`, other users keep watching, places come back when watches end; the default
//!   per-user cap admits 1,000 watches;
//! - a watcher whose client stops reading is closed (410 Expired once it reads again, so it
//!   re-lists) while a normal watcher of the same objects receives every event;
//! - a user with no permissions sending thousands of requests with distinct long names and
//!   paths does not grow the server (the decision cache keys without attacker-chosen parts and
//!   is bounded in bytes);
//! - SelfSubjectRulesReviews in a row, with distinct long namespaces, stay cheap and do not
//!   grow the server.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::Server;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// ---------------------------------------------------------------------------------------------
// Process measurements and the memory cap.

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn rss_mib(s: &Server) -> u64 {
    status_kib(pid(s), "VmRSS:") / 1024
}

fn pid(s: &Server) -> u32 {
    s.child.as_ref().expect("server running").id()
}

/// Cap the server's address space at its current size plus `headroom_mib` (what `prlimit
/// --as` does): an unbounded allocation then fails in the server, not on the machine.
fn cap_memory(s: &Server, headroom_mib: u64) {
    let vm = status_kib(pid(s), "VmSize:") * 1024;
    let limit = vm + headroom_mib * 1024 * 1024;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit(2) on our own child with a valid rlimit; no memory is shared.
    let rc = unsafe {
        libc::prlimit(
            pid(s) as libc::pid_t,
            libc::RLIMIT_AS,
            &rl,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit failed: {}", std::io::Error::last_os_error());
}

fn alive(s: &mut Server) -> bool {
    matches!(s.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/2 client whose reading can be paused (a client that stops reading its socket).

#[derive(Default)]
struct Pause {
    paused: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Pause {
    fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            if let Some(w) = self.waker.lock().unwrap().take() {
                w.wake();
            }
        }
    }
}

struct PausableIo<T> {
    inner: T,
    pause: Arc<Pause>,
}

impl<T: AsyncRead + Unpin> AsyncRead for PausableIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pause.paused.load(Ordering::SeqCst) {
            *self.pause.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.pause.paused.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PausableIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct H2 {
    send: SendRequest<Full<Bytes>>,
    pause: Arc<Pause>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for H2 {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// One HTTP/2 connection as `identity` (PEM cert chain, key). `wide_open` advertises the
/// largest flow-control windows, so the server may send as much as it likes.
async fn h2(s: &Server, identity: &(String, String), wide_open: bool) -> H2 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(s.ca_pem().as_bytes()) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(identity.0.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert pem");
    let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).expect("key pem");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .expect("connect");
    // As Go's clients: without it a request body waits for a delayed ACK (40 ms).
    tcp.set_nodelay(true).expect("nodelay");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("tls");
    let pause = Arc::new(Pause::default());
    let io = PausableIo {
        inner: tls,
        pause: pause.clone(),
    };
    let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    if wide_open {
        b.initial_stream_window_size(i32::MAX as u32)
            .initial_connection_window_size(i32::MAX as u32);
    }
    let (send, conn) = b.handshake(TokioIo::new(io)).await.expect("h2 handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    H2 { send, pause, conn }
}

fn request(method: &str, path: &str, body: Option<&Value>) -> http::Request<Full<Bytes>> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    http::Request::builder()
        .method(method)
        .uri(format!("https://127.0.0.1{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .expect("request")
}

/// A complete request: status and body.
async fn call(c: &H2, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let mut send = c.send.clone();
    send.ready().await.expect("connection ready");
    let resp = send
        .send_request(request(method, path, body))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, body)
}

/// Start a watch and return its response head (the body is left unread).
async fn open_watch(c: &H2, path: &str) -> http::Response<hyper::body::Incoming> {
    let mut send = c.send.clone();
    send.ready().await.expect("connection ready");
    send.send_request(request("GET", path, None))
        .await
        .expect("watch response")
}

/// Read watch lines until `n` lines arrived or `timeout` passed.
async fn read_lines(
    body: &mut hyper::body::Incoming,
    buf: &mut Vec<u8>,
    n: usize,
    timeout: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            out.push(serde_json::from_slice(&line).expect("watch line is JSON"));
            if out.len() >= n {
                return out;
            }
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            _ => return out,
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// `count` ConfigMaps of about `size` bytes each in `ns`, half labelled `tier=a`.
async fn fill(c: &H2, ns: &str, count: usize, size: usize) {
    let (code, _) = call(
        c,
        "POST",
        "/api/v1/namespaces",
        Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
    )
    .await;
    assert!(code == 201 || code == 409, "namespace {ns}: {code}");
    let mut tasks = Vec::new();
    for i in 0..count {
        let send = c.send.clone();
        let ns = ns.to_string();
        tasks.push(tokio::spawn(async move {
            let tier = if i % 2 == 0 { "a" } else { "b" };
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "labels": {"tier": tier}},
                "data": {"blob": "x".repeat(size)}});
            let mut send = send;
            send.ready().await.expect("ready");
            let resp = send
                .send_request(request(
                    "POST",
                    &format!("/api/v1/namespaces/{ns}/configmaps"),
                    Some(&cm),
                ))
                .await
                .expect("create");
            let code = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            assert_eq!(code, 201, "create cm-{i}");
        }));
    }
    for t in tasks {
        t.await.expect("create task");
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

async fn open_watches(c: &H2) -> f64 {
    let (code, body) = call(c, "GET", "/metrics", None).await;
    assert_eq!(code, 200);
    metric(
        &String::from_utf8_lossy(&body),
        "apiserver_registered_watchers",
    )
}

async fn wait_open_watches(c: &H2, want: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = open_watches(c).await;
        if n == want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server's own watches once the in-process controllers have opened all of theirs (the
/// garbage collector watches every resource): the count no longer changes for a second.
async fn stable_watches(c: &H2) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = open_watches(c).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = open_watches(c).await;
        if m == n || Instant::now() > deadline {
            return m;
        }
        n = m;
    }
}

/// Milliseconds of one GET of a small object.
async fn get_ms(c: &H2, path: &str) -> u128 {
    let t = Instant::now();
    let (code, _) = call(c, "GET", path, None).await;
    assert_eq!(code, 200, "GET {path}");
    t.elapsed().as_millis()
}

// ---------------------------------------------------------------------------------------------
// Item 8: watches.

/// 200 watches that are never read, on one HTTP/2 connection whose client stops reading its
/// socket (the worst case: the server may buffer whatever it wants), over ~7.5 MB of
/// ConfigMaps. Before the fix each such watch held the whole decoded initial state (~133 MiB
/// each; the server went from 150 MB to 4.8 GB and aborted).
#[test]
fn unread_watches_on_one_connection_stay_bounded() {
    let mut s = Server::start();
    let admin = s.admin_identity();
    let rt = runtime();
    let c = rt.block_on(h2(&s, &admin, false));
    rt.block_on(fill(&c, "big", 75, 100_000));
    cap_memory(&s, 3072);
    let before = rss_mib(&s);

    // The in-process controllers hold a few watches of their own.
    let baseline = rt.block_on(stable_watches(&c));
    let attacker = rt.block_on(h2(&s, &admin, true));
    // One complete exchange first, so the connection's settings are known; then stop reading.
    let (code, _) = rt.block_on(call(&attacker, "GET", "/version", None));
    assert_eq!(code, 200);
    attacker.pause.set(true);
    let paths: Vec<String> = (0..200)
        .map(|i| match i % 4 {
            0 | 1 => "/api/v1/namespaces/big/configmaps?watch=1".to_string(),
            2 => "/api/v1/configmaps?watch=1&labelSelector=tier%3Da".to_string(),
            _ => "/api/v1/configmaps?watch=1&fieldSelector=metadata.namespace%3Dbig&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan".to_string(),
        })
        .collect();
    let pending: Vec<_> = paths
        .iter()
        .map(|p| {
            let mut send = attacker.send.clone();
            let req = request("GET", p, None);
            rt.spawn(async move {
                let _ = send.ready().await;
                let _ = send.send_request(req).await;
            })
        })
        .collect();
    let opened = rt.block_on(wait_open_watches(
        &c,
        baseline + 200.0,
        Duration::from_secs(20),
    ));
    assert_eq!(opened, baseline + 200.0, "all 200 watches are open");
    // Let the server push whatever it is going to push into the stalled connection.
    std::thread::sleep(Duration::from_secs(3));
    let during = rss_mib(&s);
    let get = rt.block_on(get_ms(&c, "/api/v1/namespaces/big/configmaps/cm-1"));
    eprintln!(
        "200 unread watches over 7.5 MB: RSS {before} MiB before, {during} MiB with the watches open (+{} MiB); GET {get} ms",
        during.saturating_sub(before)
    );
    assert!(alive(&mut s), "the server survived");
    assert!(
        during < before + 250,
        "RSS grew from {before} to {during} MiB"
    );
    assert!(get < 1000, "a GET took {get} ms with the watches open");

    // Closing the connection ends every watch and gives their places back.
    for p in pending {
        p.abort();
    }
    drop(attacker);
    let left = rt.block_on(wait_open_watches(&c, baseline, Duration::from_secs(20)));
    assert_eq!(
        left, baseline,
        "watches of a closed connection are released"
    );
}

#[test]
fn watch_caps_answer_429_and_free_up() {
    let s = Server::start_with(&["--max-watches-per-user", "30", "--max-watches", "100"]);
    let admin = s.admin_identity();
    let alice = s.client_cert("alice", &["system:masters"]);
    let rt = runtime();
    rt.block_on(async {
        s.settle();
        let c = h2(&s, &admin, false).await;
        // The in-process controllers (the garbage collector watches every resource) hold watches
        // of their own, against the 100.
        let baseline = stable_watches(&c).await;
        assert!((0.0..60.0).contains(&baseline), "{baseline}");
        let a = h2(&s, &alice, false).await;
        let mut held = Vec::new();
        for i in 0..30 {
            // Variants: namespaced, cluster-scoped, with a selector, from a resourceVersion.
            let path = match i % 4 {
                0 => "/api/v1/namespaces/default/configmaps?watch=1",
                1 => "/api/v1/namespaces?watch=1",
                2 => "/apis/rbac.authorization.k8s.io/v1/clusterroles?watch=1&labelSelector=x%3Dy",
                _ => "/api/v1/secrets?watch=1&resourceVersion=1",
            };
            let r = open_watch(&a, path).await;
            assert_eq!(r.status(), 200, "watch {i} of alice");
            held.push(r);
        }
        let r = open_watch(&a, "/api/v1/namespaces/default/configmaps?watch=1").await;
        assert_eq!(r.status(), 429, "alice's 31st watch");
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
            Some("1")
        );
        let st: Value =
            serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(st["kind"], "Status");
        assert_eq!(st["code"], 429);
        assert_eq!(st["reason"], "TooManyRequests");
        assert!(
            st["message"]
                .as_str()
                .unwrap()
                .contains("for user \"alice\" (limit 30)"),
            "{st}"
        );
        // Other requests from alice are not affected.
        let (code, _) = call(&a, "GET", "/api/v1/namespaces/default", None).await;
        assert_eq!(code, 200);

        // Others have their own allowances, up to the server's 100 (shared with the
        // controllers): bob, then carol, then dave, each up to their own 30.
        let mut others = Vec::new();
        for name in ["bob", "carol", "dave"] {
            let id = s.client_cert(name, &["system:masters"]);
            others.push(h2(&s, &id, false).await);
        }
        let mut bobs = Vec::new();
        let mut refused = None;
        'users: for conn in &others {
            loop {
                let r = open_watch(conn, "/api/v1/pods?watch=1").await;
                if r.status() == 200 {
                    bobs.push(r);
                    continue;
                }
                assert_eq!(r.status(), 429);
                let st: Value =
                    serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes())
                        .unwrap();
                if st["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("on this server")
                {
                    refused = Some(st);
                    break 'users;
                }
                break; // this user's own cap: the next one goes on
            }
        }
        assert!(bobs.len() >= 5, "the others opened {} watches", bobs.len());
        let st = refused.expect("the server's 101st watch is refused for the server's cap");
        assert!(
            st["message"].as_str().unwrap().contains("on this server"),
            "{st}"
        );
        assert_eq!(
            open_watches(&c).await,
            100.0,
            "the server holds exactly its cap"
        );

        // Ending watches (the client drops them) gives the places back.
        held.truncate(5);
        let want = 75.0;
        assert_eq!(
            wait_open_watches(&c, want, Duration::from_secs(10)).await,
            want
        );
        let frank = s.client_cert("frank", &["system:masters"]);
        let f = h2(&s, &frank, false).await;
        for i in 0..15 {
            let r = open_watch(&f, "/api/v1/pods?watch=1").await;
            assert_eq!(r.status(), 200, "frank's watch {i} after alice closed some");
            bobs.push(r);
        }
        drop(held);
        drop(bobs);
        let left = wait_open_watches(&c, baseline, Duration::from_secs(10)).await;
        assert_eq!(left, baseline);
    });
}

/// The default per-user cap leaves room for real clients: 1,000 watches over five HTTP/2
/// connections are accepted, the 1,001st is refused.
#[test]
fn default_cap_admits_a_thousand_watches_per_user() {
    let s = Server::start();
    let user = s.client_cert("informers", &["system:masters"]);
    let rt = runtime();
    rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..6 {
            conns.push(h2(&s, &user, false).await);
        }
        let (_, body) = call(&conns[0], "GET", "/api/v1/namespaces/default", None).await;
        let rv: Value = serde_json::from_slice(&body).unwrap();
        let rv = rv["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let mut held = Vec::new();
        let t = Instant::now();
        for i in 0..1000 {
            let r = open_watch(
                &conns[i / 200],
                &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"),
            )
            .await;
            assert_eq!(r.status(), 200, "watch {i}");
            held.push(r);
        }
        eprintln!("1,000 watches opened in {} ms", t.elapsed().as_millis());
        let r = open_watch(
            &conns[5],
            &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"),
        )
        .await;
        assert_eq!(r.status(), 429);
    });
}

/// A client that stops reading is closed once its backlog passes the per-watcher budget: its
/// queued events are freed, and when it reads again it finds a 410 Expired ERROR (so a
/// reflector re-lists). A watcher reading normally gets every event meanwhile.
#[test]
fn slow_watcher_is_closed_while_a_normal_one_keeps_up() {
    let mut s = Server::start();
    let admin = s.admin_identity();
    let rt = runtime();
    rt.block_on(async {
        let c = h2(&s, &admin, false).await;
        fill(&c, "churn", 1, 10).await;
        // The controllers publish kube-root-ca.crt into every new namespace: let that land,
        // then watch from the list's revision so only our updates follow.
        let deadline = Instant::now() + Duration::from_secs(20);
        while call(
            &c,
            "GET",
            "/api/v1/namespaces/churn/configmaps/kube-root-ca.crt",
            None,
        )
        .await
        .0 != 200
        {
            assert!(Instant::now() < deadline, "kube-root-ca.crt never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, body) = call(&c, "GET", "/api/v1/namespaces/churn/configmaps", None).await;
        let rv = serde_json::from_slice::<Value>(&body).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/api/v1/namespaces/churn/configmaps?watch=1&resourceVersion={rv}");

        let slow = h2(&s, &admin, false).await;
        let mut slow_watch = open_watch(&slow, &path).await.into_body();
        slow.pause.set(true);
        let fast = h2(&s, &admin, false).await;
        let mut fast_watch = open_watch(&fast, &path).await.into_body();

        // 60 updates of ~300 KB: each event carries the new and the previous value, ~36 MB
        // in all, past the 16 MiB a watcher may have queued.
        let writes = 60;
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            read_lines(&mut fast_watch, &mut buf, writes, Duration::from_secs(60)).await
        });
        for i in 0..writes {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm-0"},
                "data": {"blob": format!("{:x}", i % 16).repeat(300_000)}});
            let (code, _) = call(
                &c,
                "PUT",
                "/api/v1/namespaces/churn/configmaps/cm-0",
                Some(&cm),
            )
            .await;
            assert_eq!(code, 200, "update {i}");
        }
        let got = reader.await.unwrap();
        assert_eq!(got.len(), writes, "the normal watcher saw every update");
        let types: Vec<&str> = got
            .iter()
            .map(|l| l["type"].as_str().unwrap_or("?"))
            .collect();
        assert!(types.iter().all(|t| *t == "MODIFIED"), "{types:?}");

        // The slow watcher was dropped: reading again, it finds what was already in flight,
        // then 410, then the end of the stream.
        slow.pause.set(false);
        let mut buf = Vec::new();
        let lines = read_lines(
            &mut slow_watch,
            &mut buf,
            usize::MAX,
            Duration::from_secs(20),
        )
        .await;
        let last = lines.last().expect("the slow watcher got lines");
        assert_eq!(last["type"], "ERROR", "{}", last["type"]);
        assert_eq!(last["object"]["code"], 410);
        assert!(
            lines.len() < writes,
            "the slow watcher was cut off ({} lines)",
            lines.len()
        );
        assert!(alive(&mut s));
        let ms = get_ms(&c, "/api/v1/namespaces/churn/configmaps/cm-0").await;
        assert!(ms < 1000);
    });
}

// ---------------------------------------------------------------------------------------------
// Item 9: the authorization decision cache and SelfSubjectRulesReview.

/// A user without any permission sends 8,000 requests with distinct ~6 KB names and paths
/// (all 403). Before the fix each one added a cache entry keyed on the full name or path.
#[test]
fn denied_requests_with_distinct_long_names_do_not_grow_the_server() {
    let mut s = Server::start();
    let mallory = s.client_cert("mallory", &[]);
    let admin = s.admin_identity();
    let rt = runtime();
    let c = rt.block_on(h2(&s, &admin, false));
    let m = rt.block_on(h2(&s, &mallory, false));
    cap_memory(&s, 2048);
    // Warm up allocator pools with the same kind of traffic, then measure.
    let send = |n: usize, offset: usize| {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..16 {
                let send = m.send.clone();
                tasks.push(tokio::spawn(async move {
                    let mut send = send;
                    let mut codes = Vec::new();
                    for i in (w..n).step_by(16) {
                        let id = format!("{:0>6000}", offset + i);
                        let path = match i % 4 {
                            0 => format!("/api/v1/namespaces/default/configmaps/{id}"),
                            1 => format!("/apis/apps/v1/namespaces/x{}/deployments/{id}", i % 7),
                            2 => format!("/api/v1/nodes/{id}"),
                            _ => format!("/{id}"),
                        };
                        let method = if i % 8 == 3 { "POST" } else { "GET" };
                        send.ready().await.expect("ready");
                        let resp = send
                            .send_request(request(method, &path, None))
                            .await
                            .expect("response");
                        codes.push(resp.status().as_u16());
                        let _ = resp.into_body().collect().await;
                    }
                    codes
                }));
            }
            let mut codes = Vec::new();
            for t in tasks {
                codes.extend(t.await.unwrap());
            }
            codes
        })
    };
    let warm = send(1000, 0);
    assert!(
        warm.iter().all(|c| *c == 403),
        "all denied: {:?}",
        &warm[..8]
    );
    let before = rss_mib(&s);
    let t = Instant::now();
    let codes = send(8000, 1000);
    let secs = t.elapsed().as_secs_f64();
    assert!(codes.iter().all(|c| *c == 403));
    let after = rss_mib(&s);
    eprintln!(
        "8,000 denied requests with ~6 KB names/paths in {secs:.1} s: RSS {before} -> {after} MiB"
    );
    assert!(alive(&mut s));
    assert!(
        after < before + 40,
        "RSS grew from {before} to {after} MiB (~48 MB of keys would have been cached)"
    );
    let ms = rt.block_on(get_ms(&c, "/api/v1/namespaces/default"));
    assert!(ms < 1000, "GET took {ms} ms");
}

/// SelfSubjectRulesReviews in a row, each for a new long namespace, as a user without
/// permissions and as one with `view` in a namespace: each stays within a small multiple of
/// a GET and the server does not grow (the probes neither read nor fill the decision cache).
#[test]
fn rules_reviews_in_a_row_stay_cheap_and_bounded() {
    let mut s = Server::start();
    let admin = s.admin_identity();
    let nobody = s.client_cert("nobody", &[]);
    let viewer = s.client_cert("viewer", &[]);
    s.ok(&["create", "namespace", "team"]);
    s.ok(&[
        "create",
        "rolebinding",
        "viewer-view",
        "-n",
        "team",
        "--clusterrole=view",
        "--user=viewer",
    ]);
    let rt = runtime();
    let c = rt.block_on(h2(&s, &admin, false));
    cap_memory(&s, 2048);
    for (who, id) in [("nobody", &nobody), ("viewer", &viewer)] {
        let u = rt.block_on(h2(&s, id, false));
        let review = |ns: &str| {
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                   "spec": {"namespace": ns}})
        };
        // The viewer's own namespace lists its grants (the probes still decide correctly).
        let (code, body) = rt.block_on(call(
            &u,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            Some(&review("team")),
        ));
        assert_eq!(code, 201);
        let st: Value = serde_json::from_slice(&body).unwrap();
        let lists_configmaps = st["status"]["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x == "configmaps"))
                    && r["verbs"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|x| x == "list"))
            });
        assert_eq!(lists_configmaps, who == "viewer", "{who}: {st}");

        let get = (0..5)
            .map(|_| rt.block_on(get_ms(&u, "/version")))
            .min()
            .unwrap();
        let before = rss_mib(&s);
        let mut times = Vec::new();
        for i in 0..150 {
            let ns = format!("ns-{i}-{}", "z".repeat(200));
            let t = Instant::now();
            let (code, _) = rt.block_on(call(
                &u,
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                Some(&review(&ns)),
            ));
            times.push(t.elapsed().as_micros());
            assert_eq!(code, 201);
        }
        times.sort_unstable();
        let median = times[times.len() / 2];
        let after = rss_mib(&s);
        eprintln!(
            "{who}: 150 SelfSubjectRulesReviews, median {median} µs (GET /version {get} ms), RSS {before} -> {after} MiB"
        );
        assert!(median < 100_000, "{who}: a review took {median} µs");
        // Before the fix: +23 MiB for the first 150 (each review cached ~1,000 decisions).
        assert!(
            after < before + 8,
            "{who}: RSS grew {before} -> {after} MiB"
        );
    }
    assert!(alive(&mut s));
    let ms = rt.block_on(get_ms(&c, "/api/v1/namespaces/team"));
    assert!(ms < 1000);
}
