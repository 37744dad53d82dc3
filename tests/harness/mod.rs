//! The end-to-end test harness: a real `rampart server` process on a temporary data directory
//! and loopback port, the stock kubectl pointed at its admin kubeconfig, and a raw HTTPS client
//! for requests kubectl cannot make (odd media types, huge bodies, no or foreign certificates).
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    /// Run the embedded agent (off by default: control-plane suites want an empty cluster).
    pub agent: bool,
    /// Cap on the server's address space (`RLIMIT_AS`, as `prlimit --as`), for attack tests.
    pub memory_cap: Option<u64>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        Self::start_inner(extra, false)
    }

    /// A server with its embedded agent (a node named after the host, or `--node-name`).
    pub fn start_with_agent(extra: &[&str]) -> Server {
        Self::start_inner(extra, true)
    }

    fn start_inner(extra: &[&str], agent: bool) -> Server {
        let mut s = Server {
            dir: tempfile::tempdir().expect("tempdir"),
            // Chosen by the server (`--https-port 0`) and read from its ready line: no race
            // with other processes for a "free" port.
            port: 0,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            agent,
            memory_cap: None,
        };
        s.boot();
        s
    }

    /// A server whose address space is capped at `bytes` (`setrlimit(RLIMIT_AS)` in the child,
    /// what `prlimit --as` does): attack tests run under it, so a regression that makes one
    /// request balloon fails that request or kills the server instead of the machine.
    pub fn start_capped(extra: &[&str], bytes: u64) -> Server {
        let mut s = Server {
            dir: tempfile::tempdir().expect("tempdir"),
            // Chosen by the server (`--https-port 0`) and read from its ready line: no race
            // with other processes for a "free" port.
            port: 0,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            agent: false,
            memory_cap: Some(bytes),
        };
        s.boot();
        s
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Start on a prepared data directory (e.g. one holding the user's own CA).
    pub fn start_in(dir: tempfile::TempDir) -> Server {
        let mut s = Server {
            dir,
            // Chosen by the server (`--https-port 0`) and read from its ready line: no race
            // with other processes for a "free" port.
            port: 0,
            child: None,
            extra_args: Vec::new(),
            agent: false,
            memory_cap: None,
        };
        s.boot();
        s
    }

    /// Wait until the controllers have finished their start-up writes (the `default`
    /// ServiceAccount and `kube-root-ca.crt` in the system namespaces), so tests that compare
    /// store revisions see only their own changes.
    pub fn settle(&self) {
        let done = eventually(Duration::from_secs(30), || {
            ["default", "kube-system", "kube-public", "kube-node-lease"]
                .iter()
                .all(|ns| {
                    let sa = self.raw(Raw::get(&format!(
                        "/api/v1/namespaces/{ns}/serviceaccounts/default"
                    )));
                    let cm = self.raw(Raw::get(&format!(
                        "/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"
                    )));
                    sa.status == 200 && cm.status == 200
                })
        });
        assert!(done, "the controllers did not finish their start-up writes");
        // Let any write already in flight land.
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// (Re)start the process on the same directory and port; waits for the ready line.
    pub fn boot(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
        if let Some(cap) = self.memory_cap {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit(2), which is async-signal-safe; it allocates nothing and takes no lock.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: cap,
                        rlim_max: cap,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .args(["server", "--log-format", "json"])
            .args(
                if self.extra_args.iter().any(|a| a == "--bind-address") {
                    None
                } else {
                    Some(["--bind-address", "127.0.0.1"])
                }
                .into_iter()
                .flatten(),
            )
            // Leases renewed every 2 s would move the store revision under tests that check
            // a request changed nothing; suites that test leader election ask for it.
            .args(
                if self
                    .extra_args
                    .iter()
                    .any(|a| a.starts_with("--leader-elect"))
                {
                    None
                } else {
                    Some("--leader-elect=false")
                },
            )
            .arg("--https-port")
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .args(if self.agent {
                None
            } else {
                Some("--disable-agent")
            })
            // Embedded agents of concurrent test servers share the host's network namespace
            // (and its pod bridge): give each its own pod range so their pod IPs never clash.
            .args(
                if self.agent && !self.extra_args.iter().any(|a| a == "--cluster-cidr") {
                    Some([
                        "--cluster-cidr".to_string(),
                        format!("10.{}.0.0/16", 100 + std::process::id() % 150),
                    ])
                } else {
                    None
                }
                .into_iter()
                .flatten(),
            )
            // The embedded agent's service proxy programs nftables in the test's network
            // namespace: only suites that ask for it (from a namespace of their own) run it.
            .args(
                if self.agent
                    && !self
                        .extra_args
                        .iter()
                        .any(|a| a.starts_with("--disable-kube-proxy"))
                {
                    Some("--disable-kube-proxy")
                } else {
                    None
                },
            )
            // Likewise NetworkPolicy enforcement (table `ip rampart-netpol`).
            .args(
                if self.agent
                    && !self
                        .extra_args
                        .iter()
                        .any(|a| a.starts_with("--disable-network-policy"))
                {
                    Some("--disable-network-policy")
                } else {
                    None
                },
            )
            // An embedded agent would put the cluster DNS address on the host's network
            // (a `rampart-dns` interface): only suites that ask for the cluster DNS get it.
            .args(
                if self.agent
                    && !self
                        .extra_args
                        .iter()
                        .any(|a| a.starts_with("--cluster-dns"))
                {
                    Some("--disable-cluster-dns")
                } else {
                    None
                },
            )
            // Upstream's default hard-eviction thresholds (imagefs.available<15%, ...) would
            // evict test pods on a build machine with a fuller disk: tests that are not about
            // eviction run with thresholds no machine crosses.
            .args(
                if self.agent && !self.extra_args.iter().any(|a| a.starts_with("--eviction-hard")) {
                    Some([
                        "--eviction-hard",
                        "memory.available<1Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%",
                    ])
                } else {
                    None
                }
                .into_iter()
                .flatten(),
            )
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rampart");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("RAMPART_TEST_LOGS").is_some() {
                    eprintln!("server: {line}");
                }
                if !ready_sent && line.contains("rampart server ready") {
                    ready_sent = true;
                    let _ = tx.send(ready_port(&line).ok_or(line));
                }
            }
            if !ready_sent {
                let _ = tx.send(Err("the server exited before its ready line".into()));
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(port)) => self.port = port,
            other => {
                let _ = child.kill();
                panic!("rampart server did not become ready: {other:?}");
            }
        }
        self.child = Some(child);
    }

    /// SIGTERM and wait; the exit status (`None` if it was not running).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            return child.wait().ok();
        }
        None
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in(args, None)
    }

    pub fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl_bin());
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        wait_bounded(child, KUBECTL_TIMEOUT, "kubectl")
    }

    /// Run kubectl and insist on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ok_in(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_in(args, Some(stdin));
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&full)).expect("kubectl -o json output")
    }

    pub fn admin_identity(&self) -> (String, String) {
        let pki = self.dir.path().join("pki");
        (
            std::fs::read_to_string(pki.join("admin.crt")).expect("admin cert"),
            std::fs::read_to_string(pki.join("admin.key")).expect("admin key"),
        )
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pki/ca-bundle.crt")).expect("ca")
    }

    /// A raw request trusting only `ca_pem` (e.g. a bundle saved before a CA rotation).
    pub fn raw_with_ca(&self, ca_pem: &str, req: Raw<'_>) -> RawResponse {
        let identity = match req.identity {
            Identity::Admin => Some(self.admin_identity()),
            Identity::None => None,
            Identity::Pem(cert, key) => Some((cert.to_string(), key.to_string())),
        };
        raw_request(self.port, ca_pem, identity, &req)
    }

    /// Whether a TLS handshake trusting only `ca_pem` succeeds.
    pub fn handshake_ok(&self, ca_pem: &str) -> bool {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
            let _ = roots.add(c);
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("tls client");
        let Ok(mut sock) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        while conn.is_handshaking() {
            if conn.complete_io(&mut sock).is_err() {
                return false;
            }
        }
        true
    }

    /// A raw HTTPS/1.1 request as admin (or with `identity`, or none).
    pub fn raw(&self, req: Raw<'_>) -> RawResponse {
        let identity = match req.identity {
            Identity::Admin => Some(self.admin_identity()),
            Identity::None => None,
            Identity::Pem(cert, key) => Some((cert.to_string(), key.to_string())),
        };
        raw_request(self.port, &self.ca_pem(), identity, &req)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The longest any one kubectl call may take (a hung call fails its test instead of CI).
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);

/// The bound port from the server's ready line (`"address":"127.0.0.1:PORT"` in JSON logs).
fn ready_port(line: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let addr = v["fields"]["address"]
        .as_str()
        .or_else(|| v["address"].as_str())?;
    addr.rsplit(':').next()?.parse().ok()
}

/// `child`'s output, killing it after `limit` (its stderr then says so).
pub fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    use std::io::Read;
    let pipe_reader = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = pipe_reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = pipe_reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let (status, timed_out) = loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            break (st, false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break (child.wait().expect("wait for killed child"), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = err.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("\nharness: {what} killed after {limit:?}").as_bytes());
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr,
    }
}

pub fn kubectl_bin() -> String {
    if let Ok(k) = std::env::var("RAMPART_TEST_KUBECTL") {
        if !k.is_empty() {
            return k;
        }
    }
    "kubectl".to_string()
}

pub enum Identity<'a> {
    Admin,
    None,
    Pem(&'a str, &'a str),
}

pub struct Raw<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    pub identity: Identity<'a>,
    /// Extra request headers (name, value).
    pub headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Raw<'a> {
    pub fn get(path: &'a str) -> Self {
        Raw {
            method: "GET",
            path,
            content_type: None,
            body: b"",
            identity: Identity::Admin,
            headers: Vec::new(),
        }
    }

    pub fn send(method: &'a str, path: &'a str, content_type: &'a str, body: &'a [u8]) -> Self {
        Raw {
            method,
            path,
            content_type: Some(content_type),
            body,
            identity: Identity::Admin,
            headers: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn raw_request(
    port: u16,
    ca_pem: &str,
    identity: Option<(String, String)>,
    req: &Raw<'_>,
) -> RawResponse {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .expect("cert pem");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("tls client");
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.method,
        req.path,
        req.body.len()
    );
    if let Some(ct) = req.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for (name, value) in &req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).expect("write head");
    // A server may answer (413) before reading a huge body; a failed write is fine then.
    let _ = tls.write_all(req.body);
    let mut raw = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 65536];
    loop {
        match std::io::Read::read(&mut tls, &mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Run the `rampart` binary with `args`.
pub fn rampart(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart")
}

/// Run `rampart` and insist on success; returns stdout.
pub fn rampart_ok(args: &[&str]) -> String {
    let out = rampart(args);
    assert!(
        out.status.success(),
        "rampart {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Server {
    /// A client certificate `CN=cn, O=orgs...` signed with the cluster's client CA (as the CSR
    /// signer would), valid from `not_before` to `not_after` (default: an hour either side).
    pub fn client_cert_valid(
        &self,
        cn: &str,
        orgs: &[&str],
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> (String, String) {
        use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
        let pki = |f: &str| std::fs::read_to_string(self.data_dir().join("pki").join(f)).unwrap();
        let ca_pem = pki("client-ca.crt");
        let ca_key = KeyPair::from_pem(&pki("client-ca.key")).expect("ca key");
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).expect("issuer");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        let (nb, na) = validity.unwrap_or((
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        ));
        params.not_before = nb;
        params.not_after = na;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem() + &ca_pem, key.serialize_pem())
    }

    pub fn client_cert(&self, cn: &str, orgs: &[&str]) -> (String, String) {
        self.client_cert_valid(cn, orgs, None)
    }
}
