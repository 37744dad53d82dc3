//! Attacks that try to exhaust the server from the network, as an unauthenticated stranger
//! would (issue 12, items 5-7 and HEAD over HTTP/2), each against a real `rampart server`
//! held under an address-space cap (`prlimit --as`), and each followed by a check that the
//! server is alive and answers a GET within a second:
//!
//! - `/metrics` cardinality: hundreds of unauthenticated requests with new methods and paths
//!   (quotes, backslashes, encoded newlines) and authenticated requests for resources that do
//!   not exist add a bounded number of series, and the scrape stays valid exposition format.
//! - Connections: idle TLS connections, half a header (HTTP/1) and an HTTP/2 preface without
//!   a request are closed after the (shortened) timeouts; past the per-address cap new
//!   unauthenticated connections are refused while the admin connects and is served; a watch
//!   outlives the idle timeout.
//! - The audit trail: thousands of unauthenticated requests with 60 KB URIs write a bounded
//!   amount (counted summary lines account for every request), nothing earlier is removed,
//!   the record of a namespace deletion stays, and `audit verify` passes; pruning happens only
//!   for shipped files when the operator opts in, and `verify` then fails unless
//!   `--allow-pruned`; a disk budget refuses mutations (503, nothing stored) before reads.
//! - HEAD over HTTP/2 (raw frames and hyper's client) and HTTP/1: no body, no DATA frame.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{Identity, Raw, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The address-space cap the server runs under: far above its normal few hundred MiB of
/// mappings, far below what the attacks used to make it allocate (GBs).
const ADDRESS_SPACE_CAP: u64 = 6 << 30;

/// Start a server and put it under the memory cap (`prlimit --pid ... --as=...`, done with
/// the same syscall prlimit(1) makes).
fn start(extra: &[&str]) -> Server {
    let s = Server::start_with(extra);
    cap_memory(&s);
    s
}

/// Tests that set the audit test hooks run in their own process under nextest; this keeps
/// the others on the defaults when several run in one process (`cargo test`).
fn default_audit_env() {
    // SAFETY: called at the start of a test, before it starts threads or a server.
    std::env::remove_var("RAMPART_TEST_AUDIT_MAXSIZE_BYTES");
    std::env::remove_var("RAMPART_TEST_AUDIT_MAX_TOTAL_BYTES");
}

fn cap_memory(s: &Server) {
    let pid = s.child.as_ref().expect("running").id() as libc::pid_t;
    let limit = libc::rlimit64 {
        rlim_cur: ADDRESS_SPACE_CAP,
        rlim_max: ADDRESS_SPACE_CAP,
    };
    // SAFETY: prlimit64(2) on our own child with a valid rlimit and no old-value pointer.
    let rc = unsafe { libc::prlimit64(pid, libc::RLIMIT_AS, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The server answers an admin GET, within a second.
fn alive_and_fast(s: &Server) {
    let t = Instant::now();
    let r = s.raw(Raw::get("/api/v1/namespaces/default"));
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(took < Duration::from_secs(1), "GET took {took:?}");
    if let Some(child) = &s.child {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let rss_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let vm_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmSize:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        eprintln!("server RSS {rss_kb} KiB, address space {vm_kb} KiB, GET {took:?}");
        assert!(rss_kb < 500 * 1024, "server RSS {rss_kb} KiB");
    }
}

// ---------------------------------------------------------------------------------------
// Raw TLS connections

fn client_config(
    s: &Server,
    identity: Option<(String, String)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(s.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A connection with its TLS handshake done (and the server's first flight read).
fn connect(s: &Server, config: &Arc<rustls::ClientConfig>) -> Tls {
    try_connect(s, config).expect("handshake")
}

fn try_connect(s: &Server, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", s.port))?;
    sock.set_read_timeout(Some(Duration::from_secs(15)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    // The client's last flight (its Finished) may still be queued: the server's handshake
    // is done only once it arrives.
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// Reads until the server closes the connection; how long that took from `since` (`None`
/// when it is still open after `limit`).
fn closed_after(tls: &mut Tls, since: Instant, limit: Duration) -> Option<Duration> {
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(since.elapsed()),
        }
        if since.elapsed() > limit {
            return None;
        }
    }
}

/// One request on a kept-alive HTTP/1.1 connection; returns (status, body).
fn request(tls: &mut Tls, method: &str, target: &str, extra: &str) -> (u16, Vec<u8>) {
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n{extra}\r\n"
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.flush().unwrap();
    read_response(tls, method == "HEAD")
}

fn read_response(tls: &mut Tls, head_request: bool) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = tls.read(&mut buf).expect("response head");
        assert!(n > 0, "connection closed before a response");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    let mut body = raw[split + 4..].to_vec();
    let want = if head_request { 0 } else { length };
    while body.len() < want {
        let n = tls.read(&mut buf).expect("response body");
        assert!(n > 0, "connection closed inside a body");
        body.extend_from_slice(&buf[..n]);
    }
    (status, body)
}

// ---------------------------------------------------------------------------------------
// (a) /metrics

/// Checks `text` is valid Prometheus text exposition: comments, or `name{labels} value`
/// with label values using only the three escapes the format defines. Returns the number
/// of samples.
fn parse_exposition(text: &str) -> Result<usize, String> {
    let mut samples = 0;
    for (i, line) in text.lines().enumerate() {
        let err = |what: &str| Err(format!("line {}: {what}: {line:?}", i + 1));
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut chars = line.char_indices().peekable();
        let name_end = loop {
            match chars.peek() {
                Some((_, c)) if c.is_ascii_alphanumeric() || *c == '_' || *c == ':' => {
                    chars.next();
                }
                Some((j, _)) => break *j,
                None => return err("no value"),
            }
        };
        if name_end == 0 || line.as_bytes()[0].is_ascii_digit() {
            return err("bad metric name");
        }
        if let Some((_, '{')) = chars.peek() {
            chars.next();
            loop {
                // label name
                let mut label = String::new();
                while let Some((_, c)) = chars.peek() {
                    if c.is_ascii_alphanumeric() || *c == '_' {
                        label.push(*c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if label.is_empty() {
                    return err("empty label name");
                }
                if chars.next().map(|x| x.1) != Some('=') || chars.next().map(|x| x.1) != Some('"')
                {
                    return err("label without =\"");
                }
                loop {
                    match chars.next().map(|x| x.1) {
                        Some('\\') => match chars.next().map(|x| x.1) {
                            Some('\\' | '"' | 'n') => {}
                            _ => return err("bad escape"),
                        },
                        Some('"') => break,
                        Some('\n') | None => return err("unterminated label value"),
                        Some(_) => {}
                    }
                }
                match chars.next().map(|x| x.1) {
                    Some(',') => continue,
                    Some('}') => break,
                    _ => return err("expected , or }"),
                }
            }
        }
        if chars.next().map(|x| x.1) != Some(' ') {
            return err("no space before the value");
        }
        let rest: String = chars.map(|x| x.1).collect();
        let value = rest.split(' ').next().unwrap_or("");
        if value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value) {
            return err("bad value");
        }
        samples += 1;
    }
    Ok(samples)
}

fn scrape(s: &Server) -> String {
    let r = s.raw(Raw::get("/metrics"));
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

fn request_series(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .count()
}

#[test]
fn metrics_stay_bounded_and_valid_under_hostile_requests() {
    default_audit_env();
    let s = start(&[]);
    s.settle();
    let before = scrape(&s);
    parse_exposition(&before).unwrap();

    // Strangers: 800 requests, each with a new path and a mix of methods, some invented.
    let stranger = client_config(&s, None, &[b"http/1.1"]);
    let mut conn = connect(&s, &stranger);
    let methods = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PROPFIND",
    ];
    for i in 0..800 {
        let method = match i % 10 {
            8 => format!("X{i}"),
            n => methods[n % methods.len()].to_string(),
        };
        let path = match i % 4 {
            0 => format!("/api/v1/namespaces/n{i}/pods/p\"{i}\\x"),
            1 => format!("/apis/evil{i}.example/v1/things{i}/x%0Ay{i}"),
            2 => format!("/totally/{i}/\"quoted\"/%0A%0D"),
            _ => format!("/api/v1/things{i}?watch=1&x=\\\\{i}"),
        };
        let (code, _) = request(&mut conn, &method, &path, "");
        assert_eq!(code, 401, "{method} {path}");
    }
    // Authenticated: resources, groups, subresources and verbs that do not exist.
    let admin = client_config(&s, Some(s.admin_identity()), &[b"http/1.1"]);
    let mut conn = connect(&s, &admin);
    for i in 0..200 {
        let path = match i % 3 {
            0 => format!("/apis/evil{i}.example/v1/things{i}"),
            1 => format!("/api/v1/namespaces/default/configmaps/x/sub\"{i}"),
            _ => format!("/api/v1/nothing{i}\\"),
        };
        let method = if i % 2 == 0 { "GET" } else { "MKCOL" };
        let (code, _) = request(&mut conn, method, &path, "");
        assert!(code >= 400, "{method} {path}: {code}");
    }

    let after = scrape(&s);
    let samples = parse_exposition(&after).unwrap_or_else(|e| panic!("{e}"));
    assert!(samples > 0);
    let grown = request_series(&after) - request_series(&before);
    assert!(grown <= 40, "{grown} new request series");
    assert!(
        after.len() < before.len() + 64 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        !after.contains("evil"),
        "an attacker's group became a label"
    );
    assert!(
        !after.contains("things"),
        "an attacker's resource became a label"
    );
    assert!(
        after.contains("verb=\"other\""),
        "unknown verbs collapse to other"
    );
    // Strangers are counted without their paths.
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("apiserver_request_total{")
                && l.contains("resource=\"\"")
                && l.contains("code=\"401\"")),
        "401s are counted"
    );
    alive_and_fast(&s);
}

// ---------------------------------------------------------------------------------------
// (b) connections

#[test]
fn quiet_and_anonymous_connections_are_closed_and_capped() {
    default_audit_env();
    let header = Duration::from_secs(3);
    let s = start(&[
        "--request-header-timeout",
        "3s",
        "--idle-connection-timeout",
        "4s",
        "--tls-handshake-timeout",
        "2s",
        "--max-unauthenticated-connections-per-ip",
        "8",
    ]);
    let anonymous = client_config(&s, None, &[b"http/1.1"]);
    let h2 = client_config(&s, None, &[b"h2"]);
    // The server's own controllers dial it over loopback right after it is ready, and their
    // handshakes count against the same per-address cap of 8: wait until that burst is over
    // (three handshakes in a row accepted) before measuring the cap.
    let mut accepted_in_a_row = 0;
    let settle = Instant::now();
    while accepted_in_a_row < 3 {
        assert!(
            settle.elapsed() < Duration::from_secs(20),
            "the server's start-up handshakes never settled"
        );
        if try_connect(&s, &anonymous).is_ok() {
            accepted_in_a_row += 1;
        } else {
            accepted_in_a_row = 0;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let opened = Instant::now();
    // Up to the cap: idle connections, half a header, an HTTP/2 preface and SETTINGS only.
    let mut held: Vec<(&str, Tls)> = Vec::new();
    for _ in 0..5 {
        held.push(("idle", connect(&s, &anonymous)));
    }
    for _ in 0..2 {
        let mut c = connect(&s, &anonymous);
        c.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        c.flush().unwrap();
        held.push(("half header", c));
    }
    let mut c = connect(&s, &h2);
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    c.flush().unwrap();
    held.push(("h2 without a request", c));

    // Let the server finish its side of those handshakes before going past the cap.
    std::thread::sleep(Duration::from_millis(500));
    // Past the cap: refused right after the handshake.
    for _ in 0..3 {
        let t = Instant::now();
        // Closed right after the handshake: the client may see that while finishing its own.
        let Ok(mut extra) = try_connect(&s, &anonymous) else {
            continue;
        };
        let _ = extra.write_all(b"GET /cacerts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let closed = closed_after(&mut extra, t, Duration::from_secs(2));
        assert!(closed.is_some(), "a ninth anonymous connection was kept");
    }
    // The admin (a trusted certificate) is not counted, and is served.
    alive_and_fast(&s);

    // All of them closed after the header timeout, none much later.
    for (what, mut c) in held {
        let took = closed_after(&mut c, opened, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{what} connection still open after 10 s"));
        assert!(
            took >= header - Duration::from_millis(500),
            "{what} closed after {took:?}, before the timeout"
        );
    }
    // Their places are free again.
    let r = s.raw(Raw {
        identity: Identity::None,
        ..Raw::get("/cacerts")
    });
    assert_eq!(r.status, 200);
    alive_and_fast(&s);
}

#[test]
fn a_watch_outlives_the_idle_and_header_timeouts() {
    default_audit_env();
    let s = start(&[
        "--request-header-timeout",
        "2s",
        "--idle-connection-timeout",
        "2s",
    ]);
    let admin = client_config(&s, Some(s.admin_identity()), &[b"http/1.1"]);
    let mut watch = connect(&s, &admin);
    watch
        .write_all(
            b"GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        )
        .unwrap();
    watch.flush().unwrap();
    // A kept-alive admin connection with nothing in flight is closed like any other.
    let mut idle_admin = connect(&s, &admin);
    let t = Instant::now();
    assert_eq!(request(&mut idle_admin, "GET", "/version", "").0, 200);
    std::thread::sleep(Duration::from_secs(4));
    let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after-idle"}}"#;
    let r = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        body,
    ));
    assert_eq!(r.status, 201);
    watch
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("after-idle") && Instant::now() < deadline {
        let n = watch.read(&mut buf).expect("the watch is still open");
        assert!(n > 0, "the watch was closed");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("\"ADDED\""));
    let closed = closed_after(&mut idle_admin, t, Duration::from_secs(8));
    assert!(
        closed.is_some(),
        "an idle kept-alive connection stayed open"
    );
    alive_and_fast(&s);
}

/// CPU seconds the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf(3) has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn set_nofile(pid: u32, limit: libc::rlimit64) -> libc::rlimit64 {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64(2) on our own child with a valid new rlimit and a valid old-value
    // pointer.
    let rc = unsafe { libc::prlimit64(pid as libc::pid_t, libc::RLIMIT_NOFILE, &limit, &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

/// An admin GET that reports failure instead of panicking (the server may not accept yet).
fn admin_get_ok(s: &Server, path: &str) -> bool {
    let config = client_config(s, Some(s.admin_identity()), &[b"http/1.1"]);
    let Ok(mut tls) = try_connect(s, &config) else {
        return false;
    };
    let _ = tls.sock.set_read_timeout(Some(Duration::from_secs(2)));
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if tls.write_all(head.as_bytes()).is_err() || tls.flush().is_err() {
        return false;
    }
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    raw.starts_with(b"HTTP/1.1 200")
}

#[test]
fn accept_errors_back_off_instead_of_spinning() {
    default_audit_env();
    let s = start(&[]);
    // The in-process controllers hold their connections before descriptors run out (their
    // reconnect loops are not what this measures).
    s.settle();
    let pid = s.child.as_ref().unwrap().id();
    // Leave the server a handful of descriptors, then use them up with connections that
    // never start their handshake; more wait in the listen backlog.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let mut current = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64(2) reading our own child's limit into a valid struct.
    let rc = unsafe {
        libc::prlimit64(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut current,
        )
    };
    assert_eq!(rc, 0);
    let hard = current.rlim_max;
    // Only the soft limit moves (raising a hard limit again needs privilege).
    set_nofile(
        pid,
        libc::rlimit64 {
            rlim_cur: open + 6,
            rlim_max: hard,
        },
    );
    let socks: Vec<TcpStream> = (0..24)
        .map(|_| TcpStream::connect(("127.0.0.1", s.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Out of descriptors with connections pending: the accept loop waits instead of spinning.
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - before;
    eprintln!("CPU at the fd limit: {used:.2} s in 3 s");
    assert!(
        used < 0.5,
        "the server used {used:.2} s of CPU in 3 s at its fd limit"
    );
    // Once descriptors are available again, the server accepts again.
    set_nofile(
        pid,
        libc::rlimit64 {
            rlim_cur: hard,
            rlim_max: hard,
        },
    );
    drop(socks);
    assert!(
        harness::eventually(Duration::from_secs(15), || admin_get_ok(&s, "/version")),
        "the server did not recover from its fd limit"
    );
    alive_and_fast(&s);
}

// ---------------------------------------------------------------------------------------
// (c) the audit trail

fn audit_dir(s: &Server) -> PathBuf {
    s.data_dir().join("audit")
}

fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("audit-") && n.ends_with(".log")
        })
        .collect();
    files.sort();
    files
}

fn audit_bytes(dir: &Path) -> u64 {
    audit_files(dir)
        .iter()
        .chain(std::iter::once(&dir.join("audit.log")))
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

fn audit_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut files = audit_files(dir);
    files.push(dir.join("audit.log"));
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

fn verify(path: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["audit", "verify"];
    args.extend(extra);
    args.push(path.to_str().unwrap());
    let out = harness::rampart(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.success(), text)
}

fn is_stranger(l: &serde_json::Value) -> bool {
    l["user"]["username"] == "system:anonymous"
}

#[test]
fn strangers_cannot_flush_the_audit_trail() {
    // Small files so the flood would rotate many times if it were written out.
    // SAFETY: set before any thread of this test process reads the environment; nextest runs
    // each test in its own process. The server child inherits it.
    std::env::set_var("RAMPART_TEST_AUDIT_MAXSIZE_BYTES", "262144");
    std::env::remove_var("RAMPART_TEST_AUDIT_MAX_TOTAL_BYTES");
    let mut s = start(&["--audit-stranger-window", "5s"]);
    let dir = audit_dir(&s);
    s.ok(&["create", "namespace", "evidence"]);
    s.ok(&["delete", "namespace", "evidence", "--wait=false"]);
    let before_files = audit_files(&dir);
    let before_bytes = audit_bytes(&dir);

    // 4 connections × 500 requests with URIs up to 60 KB, every method; plus /cacerts with a
    // huge query (served, 200, but still nobody's request).
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let cacerts = std::sync::atomic::AtomicUsize::new(0);
    let stranger = client_config(&s, None, &[b"http/1.1"]);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (s, stranger, sent, cacerts) = (&s, &stranger, &sent, &cacerts);
            scope.spawn(move || {
                let mut conn = connect(s, stranger);
                // Other sizes too: most connections send 60 KB URIs, one 8 KB, one tiny.
                let filler = "a".repeat([60_000, 60_000, 8_000, 10][t]);
                for i in 0..500 {
                    let method = ["GET", "POST", "PUT", "DELETE", "PATCH"][i % 5];
                    if i % 50 == 49 {
                        let (code, _) =
                            request(&mut conn, "GET", &format!("/cacerts?{filler}{t}{i}"), "");
                        assert_eq!(code, 200);
                        cacerts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    let path = format!("/api/v1/namespaces/t{t}/secrets/{filler}\"{i}");
                    let (code, _) = request(&mut conn, method, &path, "User-Agent: flood\r\n");
                    assert_eq!(code, 401);
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let flood_took = started.elapsed();
    alive_and_fast(&s);
    // Stopping writes the pending summaries; count a quiescent log.
    s.stop();
    let after_bytes = audit_bytes(&dir);
    let grown = after_bytes - before_bytes;
    assert!(
        grown < 1 << 20,
        "2000 stranger requests with 60 KB URIs wrote {grown} bytes in {flood_took:?}"
    );
    for f in &before_files {
        assert!(f.exists(), "{f:?} was removed");
    }
    let lines = audit_lines(&dir);
    assert!(
        lines.iter().any(|l| l["verb"] == "delete"
            && l["objectRef"]["resource"] == "namespaces"
            && l["objectRef"]["name"] == "evidence"),
        "the namespace deletion is still on record"
    );
    // Every stranger request is accounted for: a full line or part of a summary's count.
    let accounted = |code: u64| -> u64 {
        lines
            .iter()
            .filter(|l| is_stranger(l) && l["responseStatus"]["code"] == code)
            .filter(|l| l["userAgent"] == "flood" || code == 200)
            .map(|l| {
                l["annotations"]["audit.rampart.io/aggregated-count"]
                    .as_str()
                    .map_or(1, |n| n.parse::<u64>().unwrap())
            })
            .sum()
    };
    let sent = sent.into_inner() as u64;
    assert_eq!(accounted(401), sent, "401s in the log");
    assert_eq!(
        accounted(200),
        cacerts.into_inner() as u64,
        "/cacerts in the log"
    );
    let summaries = lines
        .iter()
        .filter(|l| l["annotations"]["audit.rampart.io/aggregated-count"].is_string())
        .count();
    assert!(summaries >= 1, "no summary line");
    // Long fields are cut and say so.
    let full = lines
        .iter()
        .find(|l| {
            is_stranger(l)
                && l["userAgent"] == "flood"
                && l["requestURI"].as_str().unwrap().len() > 4000
        })
        .expect("a full stranger line with a long URI");
    assert!(full["requestURI"].as_str().unwrap().len() <= 4096);
    assert!(full["annotations"]["audit.rampart.io/truncated"]
        .as_str()
        .unwrap()
        .contains("requestURI"));
    let (ok, text) = verify(&dir, &[]);
    assert!(ok && text.contains("chain intact"), "{text}");
    assert!(!text.contains("pruned"), "{text}");
    s.boot();
    cap_memory(&s);
    alive_and_fast(&s);
}

/// Enough admin requests with long query strings to fill `bytes` of audit log.
fn fill_audit(s: &Server, bytes: u64) {
    let dir = audit_dir(s);
    let admin = client_config(s, Some(s.admin_identity()), &[b"http/1.1"]);
    let mut conn = connect(s, &admin);
    let start = audit_bytes(&dir);
    let pad = "p".repeat(3000);
    let mut i = 0;
    while audit_bytes(&dir) < start + bytes {
        let (code, _) = request(
            &mut conn,
            "GET",
            &format!("/api/v1/namespaces/default?pad={pad}{i}"),
            "",
        );
        assert_eq!(code, 200);
        i += 1;
        assert!(i < 10_000, "the audit log does not grow");
    }
}

#[test]
fn history_is_pruned_only_when_shipped_and_verify_reports_it() {
    // SAFETY: see above.
    std::env::set_var("RAMPART_TEST_AUDIT_MAXSIZE_BYTES", "65536");
    std::env::remove_var("RAMPART_TEST_AUDIT_MAX_TOTAL_BYTES");
    let s = start(&["--audit-log-maxbackup", "2"]);
    let dir = audit_dir(&s);
    s.ok(&["create", "namespace", "first-evidence"]);
    fill_audit(&s, 6 * 65536);
    // Opting in alone prunes nothing: no file has been shipped.
    let rotated = audit_files(&dir);
    assert!(rotated.len() >= 5, "{rotated:?}");
    let (ok, text) = verify(&dir, &[]);
    assert!(ok, "{text}");
    // The shipper acknowledges the three oldest files: they may go, the rest stay.
    let shipped = rotated[2]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    std::fs::write(dir.join("audit.shipped"), format!("{shipped}\n")).unwrap();
    fill_audit(&s, 65536 + 4096);
    let now = audit_files(&dir);
    for f in &rotated[..3] {
        assert!(!f.exists(), "{f:?} was shipped and should be pruned");
    }
    for f in &rotated[3..] {
        assert!(f.exists(), "{f:?} was not shipped but was removed");
    }
    assert!(
        now.len() > 2,
        "unshipped files are kept past the limit: {now:?}"
    );
    // verify: pruned history is a failure unless accepted.
    let (ok, text) = verify(&dir, &[]);
    assert!(!ok, "pruned history passed verify: {text}");
    assert!(text.contains("pruned history"), "{text}");
    let (ok, text) = verify(&dir, &["--allow-pruned"]);
    assert!(ok && text.contains("starts after pruned history"), "{text}");
    alive_and_fast(&s);
}

#[test]
fn an_exhausted_audit_budget_refuses_mutations_not_history() {
    // A 256 KiB budget in 64 KiB files; reads get 64 KiB more.
    // SAFETY: see above.
    std::env::set_var("RAMPART_TEST_AUDIT_MAXSIZE_BYTES", "65536");
    std::env::set_var("RAMPART_TEST_AUDIT_MAX_TOTAL_BYTES", "262144");
    let s = start(&["--audit-log-maxbackup", "1"]);
    let dir = audit_dir(&s);
    let create = |name: &str| {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
        s.raw(Raw::send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            body.as_bytes(),
        ))
        .status
    };
    assert_eq!(create("early"), 201);
    // The in-process controllers' start-up requests (informers, the garbage collector's
    // discovery) are audited too: let them finish before measuring what is left.
    s.settle();
    let mut last = audit_bytes(&dir);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = audit_bytes(&dir);
        if now == last {
            break;
        }
        last = now;
    }
    let files_before = audit_files(&dir);
    // Fill up to the budget with reads; the next mutation is refused up front.
    fill_audit(&s, 262144u64.saturating_sub(audit_bytes(&dir)));
    assert_eq!(create("refused"), 503);
    for verb in ["PUT", "PATCH", "DELETE"] {
        let r = s.raw(Raw::send(
            verb,
            "/api/v1/namespaces/default/configmaps/early",
            "application/merge-patch+json",
            b"{}",
        ));
        assert_eq!(r.status, 503, "{verb}");
    }
    assert_eq!(
        s.raw(Raw::get("/api/v1/namespaces/default/configmaps/early"))
            .status,
        200,
        "reads go on past the budget"
    );
    // Nothing was deleted to make room, even with maxbackup 1.
    for f in &files_before {
        assert!(f.exists(), "{f:?} was removed");
    }
    // Reads stop too, a little later.
    let admin = client_config(&s, Some(s.admin_identity()), &[b"http/1.1"]);
    let mut conn = connect(&s, &admin);
    let pad = "p".repeat(3000);
    let mut refused = false;
    for i in 0..200 {
        let (code, _) = request(
            &mut conn,
            "GET",
            &format!("/api/v1/namespaces/default?pad={pad}{i}"),
            "",
        );
        if code == 503 {
            refused = true;
            break;
        }
        assert_eq!(code, 200);
    }
    assert!(refused, "reads were never refused past the budget");
    let (ok, text) = verify(&dir, &[]);
    assert!(ok, "{text}");
    // Shipping the old files away (the operator removes them) makes room again.
    for f in audit_files(&dir) {
        std::fs::remove_file(f).unwrap();
    }
    assert!(harness::eventually(Duration::from_secs(5), || create(
        "after-shipping"
    ) == 201));
    // With room again, reads answer: the create refused at the budget was never stored.
    let r = s.raw(Raw::get("/api/v1/namespaces/default/configmaps/refused"));
    assert_eq!(r.status, 404, "the refused create was stored");
    alive_and_fast(&s);
}

// ---------------------------------------------------------------------------------------
// (d) HEAD

/// One HTTP/2 HEAD request in raw frames; returns the frames received on stream 1 as
/// (type, flags, payload length) until the stream ends.
fn raw_h2_head(s: &Server, path: &str, identity: Option<(String, String)>) -> Vec<(u8, u8, usize)> {
    let mut c = connect(s, &client_config(s, identity, &[b"h2"]));
    assert_eq!(c.conn.alpn_protocol(), Some(&b"h2"[..]));
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
                                                         // HPACK, literals without indexing: :method HEAD (name 2), :scheme https (7),
                                                         // :path (name 4), :authority (name 1).
    let mut block = vec![0x02, 4];
    block.extend_from_slice(b"HEAD");
    block.push(0x87);
    assert!(path.len() < 127);
    block.extend_from_slice(&[0x04, path.len() as u8]);
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"127.0.0.1");
    let len = block.len();
    // HEADERS, END_STREAM | END_HEADERS, stream 1.
    out.extend_from_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        1,
        0x5,
        0,
        0,
        0,
        1,
    ]);
    out.extend_from_slice(&block);
    c.write_all(&out).unwrap();
    c.flush().unwrap();
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (ty, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            if ty == 4 && flags & 1 == 0 {
                c.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).unwrap(); // SETTINGS ACK
                c.flush().unwrap();
            }
            assert_ne!(ty, 7, "GOAWAY: a protocol error");
            if stream == 1 {
                assert_ne!(ty, 3, "RST_STREAM on the HEAD request");
                frames.push((ty, flags, len));
                if flags & 1 == 1 && (ty == 0 || ty == 1) {
                    // Give a stray DATA frame a moment to show up.
                    std::thread::sleep(Duration::from_millis(200));
                    c.sock
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut tail = [0u8; 1024];
                    if let Ok(n) = c.read(&mut tail) {
                        if n >= 9 && tail[3] == 0 {
                            frames.push((0, tail[4], 0));
                        }
                    }
                    return frames;
                }
            }
            buf.drain(..9 + len);
        }
        assert!(Instant::now() < deadline, "no end of stream: {frames:?}");
        let n = c.read(&mut chunk).expect("h2 frames");
        assert!(n > 0, "closed: {frames:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn head_sends_no_body_over_http2_or_http1() {
    default_audit_env();
    let s = start(&[]);
    let cases: Vec<(&str, Option<(String, String)>)> = vec![
        ("/api/v1/namespaces/default", Some(s.admin_identity())),
        ("/api/v1/namespaces", Some(s.admin_identity())),
        ("/version", Some(s.admin_identity())),
        ("/healthz", Some(s.admin_identity())),
        ("/api/v1/namespaces/nope", Some(s.admin_identity())),
        ("/metrics", Some(s.admin_identity())),
        ("/api/v1/namespaces/default", None),
        ("/cacerts", None),
    ];
    for (path, identity) in &cases {
        let frames = raw_h2_head(&s, path, identity.clone());
        assert!(
            frames.iter().all(|(ty, _, _)| *ty != 0),
            "HEAD {path}: DATA frame in {frames:?}"
        );
        let headers = frames.iter().find(|(ty, _, _)| *ty == 1).expect("HEADERS");
        assert_eq!(headers.1 & 1, 1, "HEAD {path}: HEADERS must end the stream");
    }

    // A strict client (hyper, HTTP/2 only) sees no body and no error.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let config = client_config(&s, Some(s.admin_identity()), &[b"h2"]);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        let driver = tokio::spawn(conn);
        for path in ["/api/v1/namespaces/default", "/version", "/api/v1/nope"] {
            for method in [http::Method::HEAD, http::Method::GET] {
                let req = http::Request::builder()
                    .method(method.clone())
                    .uri(format!("https://127.0.0.1:{}{path}", s.port))
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let resp = send.send_request(req).await.expect("response");
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                if method == http::Method::HEAD {
                    assert!(body.is_empty(), "HEAD {path}: {} body bytes", body.len());
                } else {
                    assert!(!body.is_empty(), "GET {path} ({status}) has a body");
                }
            }
        }
        assert!(!driver.is_finished(), "the connection failed");
    });

    // HTTP/1.1: the GET's length, no body.
    let admin = client_config(&s, Some(s.admin_identity()), &[b"http/1.1"]);
    let mut conn = connect(&s, &admin);
    let (code, body) = request(&mut conn, "HEAD", "/api/v1/namespaces/default", "");
    assert_eq!(code, 200);
    assert!(body.is_empty());
    // The connection is still in step: the next response parses.
    let (code, body) = request(&mut conn, "GET", "/api/v1/namespaces/default", "");
    assert_eq!(code, 200);
    assert!(!body.is_empty());
    alive_and_fast(&s);
}
