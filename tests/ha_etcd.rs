//! Two `rampart server`s on one real etcd (Debian's `etcd-server`, started by the test on
//! loopback), once over plain HTTP and once with TLS client certificates: the second server
//! joins with a server token (agent tokens are refused), writes through one server are read
//! and watched through the other, tokens minted by one authenticate on the other, secrets
//! never reach etcd in plaintext (read back raw with the etcd client), the
//! `default/kubernetes` Endpoints list both servers; after `kill -9` of the first server the
//! second keeps serving, takes over the controller-manager Lease, and an agent that joined
//! through the first fails over to it (its node Lease keeps being renewed).
//!
//! The servers listen on 127.0.0.1 and 127.0.0.2 with the same port, as upstream's Endpoints
//! carry one port for every server. Skips when `etcd` is not installed, unless
//! `RAMPART_REQUIRE_PRIVILEGED=1` (CI), where that is a failure.
#![allow(unsafe_code)] // test support: prctl(PR_SET_PDEATHSIG) between fork and exec

mod harness;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use harness::{eventually, free_port, Server};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use serde_json::Value;

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn etcd_or_skip() -> Option<PathBuf> {
    match which("etcd") {
        Some(p) => Some(p),
        None if std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() == Ok("1") => {
            panic!("etcd (Debian package etcd-server) is required (RAMPART_REQUIRE_PRIVILEGED=1)")
        }
        None => {
            eprintln!("SKIP: etcd is not installed (Debian package etcd-server)");
            None
        }
    }
}

/// TLS material for etcd: a CA, etcd's serving pair, our client pair (PEM files).
struct EtcdTls {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn etcd_tls(dir: &Path) -> EtcdTls {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "etcd-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
    let leaf = |cn: &str, server: bool| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        if server {
            p.subject_alt_names = vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::DnsName("localhost".try_into().unwrap()),
            ];
        }
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let (sc, sk) = leaf("etcd", true);
    let (cc, ck) = leaf("rampart", false);
    EtcdTls {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &sc),
        server_key: write("server-key.pem", &sk),
        client_cert: write("client.pem", &cc),
        client_key: write("client-key.pem", &ck),
    }
}

struct Etcd {
    endpoint: String,
    child: Child,
    tls: Option<EtcdTls>,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    fn start(bin: &Path, with_tls: bool) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let scheme = if with_tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let tls = with_tls.then(|| etcd_tls(dir.path()));
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir").arg(dir.path().join("etcd")).args([
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
        ]);
        if let Some(t) = &tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: the hook only calls prctl(2), async-signal-safe, between fork and exec: the
        // etcd dies with the test process even if the test panics.
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
        Etcd {
            endpoint,
            child,
            tls,
            _dir: dir,
        }
    }

    /// `--datastore-*` flags for a server.
    fn flags(&self) -> Vec<String> {
        let mut f = vec!["--datastore-endpoint".to_string(), self.endpoint.clone()];
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--datastore-cafile", &t.ca),
                ("--datastore-certfile", &t.client_cert),
                ("--datastore-keyfile", &t.client_key),
            ] {
                f.push(flag.into());
                f.push(path.display().to_string());
            }
        }
        f
    }

    /// The raw value of `key` in etcd, read with the etcd client (not through Rampart).
    fn raw_value(&self, key: &str) -> Option<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut opts = etcd_client::ConnectOptions::new();
            if let Some(t) = &self.tls {
                let read = |p: &PathBuf| std::fs::read(p).unwrap();
                opts = opts.with_tls(
                    etcd_client::TlsOptions::new()
                        .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca)))
                        .identity(etcd_client::Identity::from_pem(
                            read(&t.client_cert),
                            read(&t.client_key),
                        )),
                );
            }
            let mut c = etcd_client::Client::connect([self.endpoint.as_str()], Some(opts))
                .await
                .expect("etcd client");
            let resp = c.get(key, None).await.expect("etcd get");
            resp.kvs().first().map(|kv| kv.value().to_vec())
        })
    }
}

/// A server on `ip` with a fixed port (both servers of a cluster share it).
fn server_on(ip: &str, port: u16, extra: &[String]) -> Server {
    let mut args: Vec<String> = [
        "--bind-address",
        ip,
        "--advertise-address",
        ip,
        "--leader-elect=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    let mut s = Server {
        dir: tempfile::tempdir().unwrap(),
        port,
        child: None,
        extra_args: args,
        agent: false,
        memory_cap: None,
    };
    s.boot();
    s
}

fn rampart_out(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart")
}

fn token(s: &Server, role: &str) -> String {
    let dir = s.data_dir().display().to_string();
    let out = rampart_out(&["token", "create", "--data-dir", &dir, "--role", role]);
    assert!(
        out.status.success(),
        "token create --role {role}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The first server, then a second joining it with a server token.
fn two_servers(etcd: &Etcd) -> (Server, Server) {
    let port = free_port();
    let a = server_on("127.0.0.1", port, &etcd.flags());
    let t = token(&a, "server");
    let mut join = etcd.flags();
    join.extend([
        "--server".to_string(),
        format!("https://127.0.0.1:{port}"),
        "--token".to_string(),
        t,
    ]);
    let b = server_on("127.0.0.2", port, &join);
    (a, b)
}

fn file_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The checks both datastore variants share; returns nothing, panics on a failure.
fn same_cluster_through_both(etcd: &Etcd, a: &Server, b: &Server) {
    // The joining server has the cluster's CA and keys, owner-only, and its own serving cert.
    let pki = |s: &Server, f: &str| std::fs::read(s.data_dir().join("pki").join(f)).unwrap();
    assert_eq!(pki(a, "ca.crt"), pki(b, "ca.crt"), "same cluster CA");
    assert_eq!(
        pki(a, "sa.pub"),
        pki(b, "sa.pub"),
        "same service-account keys"
    );
    assert_ne!(
        pki(a, "apiserver-serving.crt"),
        pki(b, "apiserver-serving.crt"),
        "each server has its own serving certificate"
    );
    for f in [
        "pki/ca.key",
        "pki/sa.key",
        "pki/client-ca.key",
        "encryption/keys.json",
    ] {
        assert_eq!(file_mode(&b.data_dir().join(f)), 0o600, "{f} is 0600");
    }
    assert!(
        b.data_dir().join("audit").exists(),
        "B keeps its own audit log"
    );

    // Writes through one are read through the other, and watched there.
    let mut watch = Command::new(harness::kubectl_bin())
        .arg("--kubeconfig")
        .arg(b.kubeconfig())
        .args([
            "get",
            "configmaps",
            "-n",
            "default",
            "--watch",
            "-o",
            "name",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let (tx, rx) = mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The watch is established once it printed the initial list (kube-root-ca.crt).
    let first = rx.recv_timeout(Duration::from_secs(30));
    assert!(first.is_ok(), "the watch through B never listed");
    a.ok(&["create", "configmap", "ha-one", "--from-literal=k=v1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line == "configmap/ha-one" => {
                seen = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen, "a write through A was not watched through B");
    assert_eq!(
        b.ok(&["get", "configmap", "ha-one", "-o", "jsonpath={.data.k}"]),
        "v1"
    );
    b.ok(&["create", "configmap", "ha-two", "--from-literal=k=v2"]);
    assert_eq!(
        a.ok(&["get", "configmap", "ha-two", "-o", "jsonpath={.data.k}"]),
        "v2"
    );

    // Secrets: readable through both, never plaintext in etcd.
    let plaintext = "ha-plaintext-canary-4711";
    a.ok(&[
        "create",
        "secret",
        "generic",
        "ha-secret",
        &format!("--from-literal=password={plaintext}"),
    ]);
    let b64 = b.ok(&[
        "get",
        "secret",
        "ha-secret",
        "-o",
        "jsonpath={.data.password}",
    ]);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    assert_eq!(decoded, plaintext.as_bytes(), "B decrypts A's secret");
    let raw = etcd
        .raw_value("/registry/core/secrets/default/ha-secret")
        .expect("the secret is in etcd");
    assert!(!raw.is_empty());
    let canary = base64::engine::general_purpose::STANDARD.encode(plaintext);
    for needle in [plaintext.as_bytes(), canary.as_bytes()] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "the secret is plaintext in etcd"
        );
    }
    // A plain object is stored as JSON (the reader works; only secrets are sealed).
    let cm = etcd
        .raw_value("/registry/core/configmaps/default/ha-one")
        .expect("configmap in etcd");
    assert!(String::from_utf8_lossy(&cm).contains("\"v1\""));

    // A service-account token minted through A authenticates on B.
    let sa_token = a.ok(&["create", "token", "default", "-n", "default"]);
    let empty = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(harness::kubectl_bin())
        .arg("--kubeconfig")
        .arg(empty.path())
        .arg(format!("--server=https://127.0.0.2:{}", b.port))
        .arg(format!(
            "--certificate-authority={}",
            b.data_dir().join("pki/ca-bundle.crt").display()
        ))
        .arg(format!("--token={}", sa_token.trim()))
        .args(["get", "--raw", "/api"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "A's service-account token refused by B: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The addresses in `default/kubernetes`, through `s`.
fn endpoint_ips(s: &Server) -> Vec<String> {
    let v = s.json(&[
        "get",
        "endpoints",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "json",
    ]);
    v["subsets"][0]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["ip"].as_str().map(String::from))
        .collect()
}

fn lease(s: &Server, ns: &str, name: &str) -> Value {
    let out = s.kubectl(&["get", "lease", "-n", ns, name, "-o", "json"]);
    if !out.status.success() {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

struct Agent {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(server: &str, token: &str, dir: &Path, node: &str) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["agent", "--log-format", "json", "--server", server])
        .args([
            "--token",
            token,
            "--node-name",
            node,
            "--node-ip",
            "127.0.0.1",
        ])
        .args([
            "--kubelet-port",
            "0",
            "--disable-kube-proxy",
            "--disable-cluster-dns",
        ])
        .args([
            "--eviction-hard",
            "memory.available<1Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if std::env::var_os("RAMPART_TEST_LOGS").is_some() {
                eprintln!("agent: {line}");
            }
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    Agent { child, log }
}

#[test]
fn two_servers_on_plain_etcd_and_failover() {
    let Some(bin) = etcd_or_skip() else { return };
    let etcd = Etcd::start(&bin, false);
    let (mut a, b) = two_servers(&etcd);
    same_cluster_through_both(&etcd, &a, &b);

    // Agent tokens cannot join servers: 403 with a clear message, nothing written.
    let agent_token = token(&a, "agent");
    let c_dir = tempfile::tempdir().unwrap();
    let c = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["server", "--disable-agent", "--https-port", "0"])
        .args(["--bind-address", "127.0.0.3"])
        .arg("--data-dir")
        .arg(c_dir.path())
        .args(etcd.flags())
        .args(["--server", &format!("https://127.0.0.1:{}", a.port)])
        .args(["--token", &agent_token])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = harness::wait_bounded(
        c,
        Duration::from_secs(30),
        "server joining with an agent token",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an agent token joined a server: {err}"
    );
    assert!(
        err.contains("only a server token") && err.contains("403"),
        "unclear refusal: {err}"
    );
    assert!(!c_dir.path().join("pki/ca.key").exists());
    // Nor does the admin get the keys through this door.
    let r = a.raw(harness::Raw::get("/rampart/v1/server-bootstrap"));
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));

    // Both servers are listed for agents.
    assert!(
        eventually(Duration::from_secs(30), || {
            let ips = endpoint_ips(&b);
            ips.contains(&"127.0.0.1".to_string()) && ips.contains(&"127.0.0.2".to_string())
        }),
        "default/kubernetes does not list both servers: {:?}",
        endpoint_ips(&b)
    );

    // An agent joins through A and learns B.
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = start_agent(
        &format!("https://127.0.0.1:{}", a.port),
        &agent_token,
        agent_dir.path(),
        "ha-node",
    );
    assert!(
        eventually(Duration::from_secs(60), || {
            agent.log.lock().unwrap().contains("API servers learnt")
                && !lease(&b, "kube-node-lease", "ha-node").is_null()
        }),
        "the agent did not register or learn the servers: {}",
        agent.log.lock().unwrap()
    );
    let holder = |s: &Server| {
        lease(s, "kube-system", "kube-controller-manager")["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        eventually(Duration::from_secs(30), || !holder(&b).is_empty()),
        "no controller-manager leader"
    );
    let leader_before = holder(&b);

    // kill -9 of A.
    let mut child = a.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!a.alive());
    let renew = || {
        lease(&b, "kube-node-lease", "ha-node")["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // B keeps serving writes.
    b.ok(&[
        "create",
        "configmap",
        "ha-after-kill",
        "--from-literal=k=v3",
    ]);
    // The agent fails over and its node Lease keeps being renewed through B.
    assert!(
        eventually(Duration::from_secs(60), || agent
            .log
            .lock()
            .unwrap()
            .contains("failed over to another API server")),
        "the agent did not fail over: {}",
        agent.log.lock().unwrap()
    );
    let after_failover = renew();
    assert!(
        eventually(Duration::from_secs(40), || renew() != after_failover),
        "the node lease is not renewed through B after the failover"
    );
    // Controllers keep running: the controller-manager lease is held by a live server
    // (B's identity, whether it held it already or took it over after A's expired).
    assert!(
        eventually(Duration::from_secs(40), || {
            let h = holder(&b);
            !h.is_empty() && (h != leader_before || lease_fresh(&b))
        }),
        "no live controller-manager leader after A died"
    );
    // A's address leaves the Endpoints once its apiserver Lease expires.
    assert!(
        eventually(Duration::from_secs(40), || endpoint_ips(&b)
            == ["127.0.0.2"]),
        "A is still listed: {:?}",
        endpoint_ips(&b)
    );
}

/// Whether the controller-manager Lease was renewed in the last 10 s.
fn lease_fresh(s: &Server) -> bool {
    let l = lease(s, "kube-system", "kube-controller-manager");
    let Some(t) = l["spec"]["renewTime"].as_str() else {
        return false;
    };
    let Ok(t) = t.parse::<jiff::Timestamp>() else {
        return false;
    };
    jiff::Timestamp::now().as_second() - t.as_second() < 10
}

#[test]
fn two_servers_on_etcd_with_tls_client_certs() {
    let Some(bin) = etcd_or_skip() else { return };
    let etcd = Etcd::start(&bin, true);
    let (a, b) = two_servers(&etcd);
    same_cluster_through_both(&etcd, &a, &b);
    // Snapshots are etcd's business here: a clear one-line refusal naming the tool.
    let dir = a.data_dir().display().to_string();
    let out = rampart_out(&["snapshot", "save", "--data-dir", &dir]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcdctl snapshot save"), "{err}");
}

/// Flag mistakes are one clear line and a non-zero exit, before anything is served (no etcd
/// needed).
#[test]
fn bad_cluster_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let base = [
        "server",
        "--disable-agent",
        "--https-port",
        "0",
        "--data-dir",
        &d,
    ];
    for (extra, expected) in [
        (
            vec!["--server", "https://127.0.0.1:1", "--token", "x"],
            "--server needs --datastore-endpoint",
        ),
        (
            vec!["--datastore-endpoint", "ftp://127.0.0.1:2379"],
            "expected http(s)://HOST:PORT",
        ),
        (
            vec!["--datastore-cafile", "/nonexistent"],
            "need --datastore-endpoint",
        ),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(&extra);
        let out = rampart_out(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
}

/// The key id a raw etcd value is sealed with (`rampart:aesgcm:v1:<id>:...`).
fn sealed_with(raw: &[u8]) -> String {
    let rest = raw
        .strip_prefix(b"rampart:aesgcm:v1:".as_slice())
        .expect("the value is sealed");
    let colon = rest.iter().position(|b| *b == b':').expect("a key id");
    String::from_utf8_lossy(&rest[..colon]).into_owned()
}

fn key_file(s: &Server) -> Value {
    let text = std::fs::read_to_string(s.data_dir().join("encryption/keys.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rotate_keys(s: &Server) {
    let out = rampart_out(&[
        "secrets-encrypt",
        "rotate-keys",
        "--wait",
        "--kubeconfig",
        &s.kubeconfig().display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "rotate-keys: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn secret_value(s: &Server, name: &str) -> String {
    let b64 = s.ok(&["get", "secret", name, "-o", "jsonpath={.data.v}"]);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// A secrets key rotation started on one server reaches the other: each stage waits until the
/// other server holds the keys, every secret ends sealed with the new key, both servers read and
/// write under it, and a server that was down during a rotation takes the keys when it starts.
#[test]
fn secrets_key_rotation_reaches_every_server() {
    let Some(bin) = etcd_or_skip() else { return };
    let etcd = Etcd::start(&bin, false);
    let (a, mut b) = two_servers(&etcd);
    let raw = |name: &str| {
        etcd.raw_value(&format!("/registry/core/secrets/default/{name}"))
            .expect("the secret is in etcd")
    };
    a.ok(&[
        "create",
        "secret",
        "generic",
        "before",
        "--from-literal=v=one",
    ]);
    assert_eq!(sealed_with(&raw("before")), "key1");

    rotate_keys(&a);
    assert_eq!(sealed_with(&raw("before")), "key2", "re-encrypted");
    // B took every stage: it writes with key2 and, once the rotation is published as done,
    // holds key2 alone, as A does.
    assert!(
        eventually(Duration::from_secs(15), || {
            let f = key_file(&b);
            f["write"] == "key2" && f["keys"].as_array().map(Vec::len) == Some(1)
        }),
        "B did not take the finished rotation: {}",
        key_file(&b)
    );
    assert_eq!(key_file(&a)["keys"][0]["id"], "key2");
    assert_eq!(
        secret_value(&b, "before"),
        "one",
        "B reads the re-encrypted secret"
    );
    b.ok(&[
        "create",
        "secret",
        "generic",
        "through-b",
        "--from-literal=v=two",
    ]);
    assert_eq!(
        sealed_with(&raw("through-b")),
        "key2",
        "B writes with the new key"
    );
    assert_eq!(secret_value(&a, "through-b"), "two");

    // B is down for the next rotation: A stops waiting for it once its heartbeat is stale, and
    // B takes the new keys when it starts again, before it serves.
    b.stop();
    rotate_keys(&a);
    a.ok(&[
        "create",
        "secret",
        "generic",
        "while-b-down",
        "--from-literal=v=three",
    ]);
    assert_eq!(sealed_with(&raw("while-b-down")), "key3");
    b.boot();
    assert_eq!(key_file(&b)["write"], "key3");
    assert_eq!(secret_value(&b, "while-b-down"), "three");
    assert_eq!(secret_value(&b, "through-b"), "two");

    // The keyring in etcd is sealed: no key from keys.json appears in it.
    let published = etcd
        .raw_value("/rampart/keysync/keyring")
        .expect("the published keyring");
    let secret = key_file(&a)["keys"][0]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !published
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "a key is in plaintext in etcd"
    );
}
