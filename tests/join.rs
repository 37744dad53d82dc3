//! Joining nodes end to end, with real processes: `rampart token create|list|delete`, a
//! `rampart agent` that pins the CA, joins with a token, registers its Node and renews its
//! Lease, restarts without the token; the attacks a join must refuse (wrong CA pin, wrong,
//! expired or garbage token, a stolen node name); the CSR policy (what is auto-approved, what
//! waits for a human, what is denied) and `kubectl certificate approve` issuing a certificate
//! that authenticates; the failed-token rate limit.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use harness::{eventually, Server};
use serde_json::{json, Value};

fn rampart(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn token(s: &Server) -> String {
    let dir = s.data_dir().to_str().unwrap().to_string();
    let out = rampart(&["token", "create", "--data-dir", &dir, "--ttl", "1h"]);
    assert!(
        out.status.success(),
        "token create failed: {}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn server_url(s: &Server) -> String {
    format!("https://127.0.0.1:{}", s.port)
}

/// A running `rampart agent`; its stderr is collected for assertions.
struct Agent {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn start(s: &Server, token: &str, dir: &Path, node: &str) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["agent", "--log-format", "json", "--server", &server_url(s)])
            .args([
                "--token",
                token,
                "--node-name",
                node,
                "--node-ip",
                "127.0.0.1",
            ])
            .arg("--data-dir")
            .arg(dir)
            .arg("--disable-network-policy")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let err = child.stderr.take().expect("stderr");
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

    /// Wait for the process to exit; returns (success, stderr).
    fn wait_exit(&mut self, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(200));
                return (st.success(), self.log.lock().unwrap().clone());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_ready(s: &Server, node: &str) -> bool {
    let out = s.kubectl(&["get", "node", node, "-o", "json"]);
    if !out.status.success() {
        return false;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn renew_time(s: &Server, node: &str) -> Option<String> {
    let out = s.kubectl(&["get", "lease", "-n", "kube-node-lease", node, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["spec"]["renewTime"].as_str().map(str::to_string)
}

#[test]
fn token_cli_creates_lists_and_deletes() {
    let s = Server::start();
    let dir = s.data_dir().to_str().unwrap().to_string();
    let out = rampart(&[
        "token",
        "create",
        "--data-dir",
        &dir,
        "--ttl",
        "2h",
        "--description",
        "rack 4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (hash, bearer) = printed
        .strip_prefix("R10")
        .unwrap()
        .split_once("::")
        .unwrap();
    assert_eq!(hash.len(), 64);
    let (id, secret) = bearer.split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16));
    // The pin is the SHA-256 of /cacerts as served.
    use sha2::Digest;
    let ca = s.raw(harness::Raw::get("/cacerts")).body;
    let want: String = sha2::Sha256::digest(&ca)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash, want);
    // Stored as an upstream bootstrap token.
    let sec = s.json(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    ]);
    assert_eq!(sec["type"], "bootstrap.kubernetes.io/token");
    let data = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(sec["data"][k].as_str().unwrap_or_default())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(data("usage-bootstrap-authentication"), "true");
    assert_eq!(
        data("auth-extra-groups"),
        "system:bootstrappers:rampart:default-node-token"
    );
    assert!(data("expiration").ends_with('Z'));

    let list = rampart(&["token", "list", "--data-dir", &dir]);
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.status.success());
    assert!(text.contains(id) && text.contains("rack 4"), "{text}");
    assert!(
        !text.contains(secret),
        "list must never print secrets: {text}"
    );

    let del = rampart(&["token", "delete", "--data-dir", &dir, id]);
    assert!(del.status.success(), "{}", stderr(&del));
    let list = rampart(&["token", "list", "--data-dir", &dir]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains(id));
    let again = rampart(&["token", "delete", "--data-dir", &dir, id]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no join token"),
        "{}",
        stderr(&again)
    );
    let bad = rampart(&["token", "create", "--data-dir", &dir, "--ttl", "soon"]);
    assert!(!bad.status.success());
    assert_eq!(stderr(&bad).lines().count(), 1, "{}", stderr(&bad));
}

#[test]
fn agent_joins_keeps_lease_and_restarts_without_token() {
    let s = Server::start();
    let t = token(&s);
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&s, &t, dir.path(), "worker-a");
    assert!(
        eventually(Duration::from_secs(30), || node_ready(&s, "worker-a")),
        "node never became Ready: {}",
        agent.log.lock().unwrap()
    );
    let node = s.json(&["get", "node", "worker-a"]);
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert!(node["status"]["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap()
        .starts_with('v'));
    let addrs = node["status"]["addresses"].to_string();
    assert!(
        addrs.contains("InternalIP") && addrs.contains("127.0.0.1"),
        "{addrs}"
    );
    let lease = s.json(&["get", "lease", "-n", "kube-node-lease", "worker-a"]);
    assert_eq!(lease["spec"]["holderIdentity"], "worker-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    let first = renew_time(&s, "worker-a").unwrap();
    assert!(
        eventually(Duration::from_secs(25), || renew_time(&s, "worker-a")
            .is_some_and(|r| r != first)),
        "lease renewTime did not advance"
    );
    // Key material: private, and the join CSR was approved for the token's identity.
    let pki = dir.path().join("pki");
    let mode = std::fs::metadata(pki.join("kubelet-client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(pki.join("ca.crt").exists() && pki.join("kubelet-client.crt").exists());
    assert!(
        eventually(Duration::from_secs(30), || pki
            .join("kubelet-serving.crt")
            .exists()),
        "no serving certificate: {}",
        agent.log.lock().unwrap()
    );
    let csrs = s.json(&["get", "csr"]);
    let join_csr = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .unwrap()
        .clone();
    assert!(join_csr["spec"]["username"]
        .as_str()
        .unwrap()
        .starts_with("system:bootstrap:"));
    assert!(join_csr["status"]["conditions"]
        .to_string()
        .contains("AutoApproved"));

    // Restart with the token deleted: the node certificate is enough.
    agent.stop();
    let id = t
        .split("::")
        .nth(1)
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let del = rampart(&[
        "token",
        "delete",
        "--data-dir",
        s.data_dir().to_str().unwrap(),
        &id,
    ]);
    assert!(del.status.success());
    let before = renew_time(&s, "worker-a").unwrap();
    let agent2 = Agent::start(&s, &t, dir.path(), "worker-a");
    assert!(
        eventually(Duration::from_secs(25), || renew_time(&s, "worker-a")
            .is_some_and(|r| r != before)),
        "restarted agent did not renew the lease: {}",
        agent2.log.lock().unwrap()
    );
    assert!(agent2.log.lock().unwrap().contains("no join token needed"));

    // Another machine claiming the same name with a new key is refused.
    let t2 = token(&s);
    let other = tempfile::tempdir().unwrap();
    let mut thief = Agent::start(&s, &t2, other.path(), "worker-a");
    let (ok, log) = thief.wait_exit(Duration::from_secs(30));
    assert!(!ok, "a second key took node name worker-a: {log}");
    assert!(
        log.contains("denied") && log.contains("already registered"),
        "{log}"
    );
}

#[test]
fn join_attacks_are_refused() {
    let s = Server::start();
    let t = token(&s);
    let (hash, bearer) = t.strip_prefix("R10").unwrap().split_once("::").unwrap();
    let run = |tok: &str| {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args([
                "agent",
                "--server",
                &server_url(&s),
                "--token",
                tok,
                "--node-name",
                "evil",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("agent");
        assert!(started.elapsed() < Duration::from_secs(30));
        (out.status.success(), stderr(&out))
    };

    // Wrong CA pin: refused before any authenticated request (no CSR appears).
    let wrong_hash = format!("R10{}::{bearer}", "0".repeat(64));
    let (ok, err) = run(&wrong_hash);
    assert!(!ok);
    assert!(
        err.contains("the server's CA bundle does not match the token's hash")
            && err.contains(&format!("got {hash}")),
        "{err}"
    );
    assert!(
        !err.contains(bearer.split('.').nth(1).unwrap()),
        "secret leaked: {err}"
    );

    // Wrong secret: 401 and a clear message.
    let id = bearer.split('.').next().unwrap();
    let (ok, err) = run(&format!("R10{hash}::{id}.0000000000000000"));
    assert!(!ok);
    assert!(err.contains("401") && err.contains("token"), "{err}");

    // Expired token.
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let expired = json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": "bootstrap-token-old123", "namespace": "kube-system"},
        "data": {"token-id": b64("old123"), "token-secret": b64("0123456789abcdef"),
                 "expiration": b64("2020-01-01T00:00:00Z"), "usage-bootstrap-authentication": b64("true")}});
    s.ok_in(&["create", "-f", "-"], &expired.to_string());
    let (ok, err) = run(&format!("R10{hash}::old123.0123456789abcdef"));
    assert!(!ok);
    assert!(err.contains("401"), "{err}");

    // Garbage.
    let (ok, err) = run("hello");
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("malformed"), "{err}");

    // Nothing was requested along the way.
    let csrs = s.json(&["get", "csr"]);
    assert_eq!(csrs["items"].as_array().unwrap().len(), 0, "{csrs}");
}

fn csr_pem(cn: &str, orgs: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    (
        p.serialize_request(&key).unwrap().pem().unwrap(),
        key.serialize_pem(),
    )
}

fn csr_object(name: &str, pem: &str, signer: &str, usages: &[&str]) -> String {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                 "signerName": signer, "usages": usages, "username": "mallory",
                 "groups": ["system:masters"]}})
    .to_string()
}

fn kubeconfig(s: &Server, dir: &Path, cert: &str, key: &str) -> PathBuf {
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let doc = json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server_url(s), "certificate-authority-data": b64(&s.ca_pem())}}],
        "users": [{"name": "u", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"});
    let path = dir.join(format!("kc-{}", rand::random::<u32>()));
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

fn condition(s: &Server, name: &str) -> String {
    let v = s.json(&["get", "csr", name]);
    v["status"]["conditions"].to_string()
}

fn issued_cert(s: &Server, name: &str) -> Option<String> {
    let v = s.json(&["get", "csr", name]);
    let b = v["status"]["certificate"].as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).ok()?).ok()
}

#[test]
fn csr_policy_and_manual_approval() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    // Validation: garbage request → 422, nothing stored.
    let bad = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "garbage"}, "spec": {"request": "aGVsbG8=", "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"]}});
    let err = s.kubectl_in(&["create", "-f", "-"], Some(&bad.to_string()));
    assert!(!err.status.success());
    assert!(stderr(&err).contains("spec.request"), "{}", stderr(&err));

    // The admin asking the kubelet signer for system:masters: left for a human.
    let (pem, _) = csr_pem("system:node:n0", &["system:masters"]);
    s.ok_in(
        &["create", "-f", "-"],
        &csr_object(
            "masters",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["digital signature", "client auth"],
        ),
    );
    let stored = s.json(&["get", "csr", "masters"]);
    assert_eq!(
        stored["spec"]["username"], "admin",
        "requester fields come from authentication"
    );
    assert!(!stored["spec"]["groups"].to_string().contains("mallory"));

    // A client certificate for alice, approved by a human with kubectl, then signed.
    let (pem, key) = csr_pem("alice", &["devs"]);
    s.ok_in(
        &["create", "-f", "-"],
        &csr_object(
            "alice",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["digital signature", "client auth"],
        ),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        condition(&s, "alice"),
        "null",
        "kube-apiserver-client CSRs are never auto-approved"
    );
    s.ok(&["certificate", "approve", "alice"]);
    assert!(eventually(Duration::from_secs(15), || issued_cert(
        &s, "alice"
    )
    .is_some()));
    let cert = issued_cert(&s, "alice").unwrap();
    let kc = kubeconfig(&s, tmp.path(), &cert, &key);
    let who = s.ok(&[
        "--kubeconfig",
        kc.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "json",
    ]);
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    assert!(who["status"]["userInfo"]["groups"]
        .to_string()
        .contains("devs"));
    // Approval cannot be withdrawn, and the certificate cannot be replaced.
    let _ = s.kubectl(&["certificate", "deny", "alice"]);
    let after = condition(&s, "alice");
    assert!(
        after.contains("Approved") && !after.contains("Denied"),
        "{after}"
    );
    let (pem, _) = csr_pem("bob", &[]);
    s.ok_in(
        &["create", "-f", "-"],
        &csr_object(
            "bob",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
        ),
    );
    s.ok(&["certificate", "deny", "bob"]);
    assert!(condition(&s, "bob").contains("Denied"));
    // Barrier instead of a fixed sleep: a CSR approved after bob was denied gets signed, so
    // the signer has seen bob's denial by then.
    let (pem, _) = csr_pem("carol", &[]);
    s.ok_in(
        &["create", "-f", "-"],
        &csr_object(
            "carol",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
        ),
    );
    s.ok(&["certificate", "approve", "carol"]);
    assert!(
        eventually(Duration::from_secs(15), || issued_cert(&s, "carol")
            .is_some()),
        "the barrier CSR was never signed"
    );
    assert!(
        issued_cert(&s, "bob").is_none(),
        "a denied CSR must not be signed"
    );
    assert!(
        condition(&s, "masters") == "null",
        "system:masters CSR must stay pending"
    );

    // A node identity (issued the same way) asking for another node's name: denied.
    let (pem, key) = csr_pem("system:node:n1", &["system:nodes"]);
    s.ok_in(
        &["create", "-f", "-"],
        &csr_object(
            "n1-id",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["digital signature", "client auth"],
        ),
    );
    s.ok(&["certificate", "approve", "n1-id"]);
    assert!(eventually(Duration::from_secs(15), || issued_cert(
        &s, "n1-id"
    )
    .is_some()));
    let node_kc = kubeconfig(&s, tmp.path(), &issued_cert(&s, "n1-id").unwrap(), &key);
    let (pem, _) = csr_pem("system:node:n2", &["system:nodes"]);
    let out = Command::new(harness::kubectl_bin())
        .args([
            "--kubeconfig",
            node_kc.to_str().unwrap(),
            "create",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(
                csr_object(
                    "steal-n2",
                    &pem,
                    "kubernetes.io/kube-apiserver-client-kubelet",
                    &["digital signature", "client auth"],
                )
                .as_bytes(),
            )?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        eventually(Duration::from_secs(15), || condition(&s, "steal-n2")
            .contains("Denied")),
        "{}",
        condition(&s, "steal-n2")
    );
    assert!(issued_cert(&s, "steal-n2").is_none());
    assert_eq!(condition(&s, "masters"), "null");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_token_attempts_are_rate_limited() {
    let s = tokio::task::spawn_blocking(Server::start).await.unwrap();
    let good = {
        let t = token(&s);
        t.split("::").nth(1).unwrap().to_string()
    };
    let ca = s.ca_pem();
    let server = server_url(&s);
    let attempt = |tok: String| {
        let (ca, server) = (ca.clone(), server.clone());
        async move {
            let client =
                rampart::client::build(&server, &ca, &rampart::client::Credentials::Bearer(tok))
                    .await
                    .unwrap();
            // CSRs are what a join token may read (system/bootstrappers/csr).
            let api: kube::Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
                kube::Api::all(client);
            match api.list(&Default::default()).await {
                Ok(_) => (200, String::new()),
                Err(kube::Error::Api(e)) => (e.code, e.message),
                Err(e) => (0, e.to_string()),
            }
        }
    };
    assert_eq!(attempt(good.clone()).await.0, 200);
    // Ten made-up ids from this address: each a plain 401 (the back-off is per token id, so
    // nobody is locked out by address).
    let mut messages = Vec::new();
    for i in 0..10 {
        let bad = format!("bad{i:03}.0123456789abcdef");
        messages.push(attempt(bad).await);
    }
    assert!(
        messages
            .iter()
            .all(|(code, m)| *code == 401 && m.contains("invalid or has expired")),
        "{messages:?}"
    );
    // Bad secrets for the real id: 401 five times (after that 429 with Retry-After, which
    // kube-rs honours by retrying: tests/attack_misc.rs checks those over raw HTTPS).
    let id = good.split('.').next().unwrap().to_string();
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(attempt(format!("{id}.0000000000000000")).await.0);
    }
    assert_eq!(codes, [401; 5]);
    // The correct token is never refused because of those failures.
    let (code, msg) = attempt(good).await;
    assert_eq!(code, 200, "{msg}");
    // Certificates are unaffected.
    let admin = s.ok(&["get", "ns", "default", "-o", "name"]);
    assert!(admin.contains("default"));
    drop(s);
}

#[test]
fn embedded_agent_registers_the_server_node() {
    let s = Server::start_with_agent(&["--node-name", "cp-1"]);
    assert!(eventually(Duration::from_secs(30), || node_ready(
        &s, "cp-1"
    )));
    let node = s.json(&["get", "node", "cp-1"]);
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        "true"
    );
    assert!(s.data_dir().join("agent/pki/kubelet-client.crt").exists());
    let lease = s.json(&["get", "lease", "-n", "kube-node-lease", "cp-1"]);
    assert_eq!(lease["spec"]["holderIdentity"], "cp-1");
}

fn serial_of(path: &Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
    Some(c.raw_serial_as_string())
}

#[test]
fn agent_renews_its_client_certificate_with_its_own_identity() {
    // Short certificates: the 2/3-of-life deadline comes within the first upkeep ticks.
    let s = Server::start_with(&["--cert-validity", "60s"]);
    let t = token(&s);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&s, &t, dir.path(), "worker-r");
    assert!(eventually(Duration::from_secs(30), || node_ready(
        &s, "worker-r"
    )));
    let crt = dir.path().join("pki/kubelet-client.crt");
    let first = serial_of(&crt).unwrap();
    // Renewal at 2/3 of 60 s.
    assert!(
        eventually(Duration::from_secs(60), || serial_of(&crt)
            .is_some_and(|s| s != first)),
        "client certificate was not renewed: {}",
        agent.log.lock().unwrap()
    );
    // The renewal was requested by the node itself and approved as a renewal.
    let csrs = s.json(&["get", "csr"]);
    let renewal = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["spec"]["username"] == "system:node:worker-r"
                && c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
        })
        .cloned()
        .unwrap_or_else(|| panic!("no renewal CSR: {csrs}"));
    assert!(renewal["status"]["conditions"]
        .to_string()
        .contains("renewal"));
    // And the node keeps working with the new certificate.
    let before = renew_time(&s, "worker-r").unwrap();
    assert!(
        eventually(Duration::from_secs(25), || renew_time(&s, "worker-r")
            .is_some_and(|r| r != before)),
        "{}",
        agent.log.lock().unwrap()
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["server", "--cert-validity", "soon", "--data-dir"])
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        !dir.path().join("never").exists(),
        "a bad flag must change nothing"
    );
}

#[test]
fn a_changed_ca_bundle_is_saved_and_both_certificates_renewed() {
    let s = Server::start();
    let t = token(&s);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&s, &t, dir.path(), "worker-c");
    let pki = dir.path().join("pki");
    assert!(
        eventually(Duration::from_secs(40), || pki
            .join("kubelet-serving.crt")
            .exists()),
        "{}",
        agent.log.lock().unwrap()
    );
    let (client0, serving0) = (
        serial_of(&pki.join("kubelet-client.crt")).unwrap(),
        serial_of(&pki.join("kubelet-serving.crt")).unwrap(),
    );
    // A real CA rotation (overlap phase): /cacerts now serves the new and the old root.
    let r = s.raw(harness::Raw::send(
        "POST",
        "/rampart/v1/certificates/rotate-ca",
        "application/json",
        br#"{"phase":"begin"}"#,
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let bundle = std::fs::read_to_string(s.data_dir().join("pki/ca-bundle.crt")).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(
        eventually(Duration::from_secs(40), || {
            std::fs::read_to_string(pki.join("ca.crt")).is_ok_and(|b| b == bundle)
                && serial_of(&pki.join("kubelet-client.crt")).is_some_and(|x| x != client0)
                && serial_of(&pki.join("kubelet-serving.crt")).is_some_and(|x| x != serving0)
        }),
        "{}",
        agent.log.lock().unwrap()
    );
    assert!(node_ready(&s, "worker-c"));
}
