//! The identity issue's end-to-end test: a server and two agents, each agent in its own network
//! namespace (a node with its own IP, reaching the server over a veth link), joining with a
//! token; both nodes become Ready; `rampart cert rotate-ca` runs while they stay Ready (their
//! leases keep renewing under certificates of the new CA); a revoked node is cut off within
//! seconds while the other carries on.
//!
//! Needs root and `ip` (iproute2); without them it prints why and skips.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::{eventually, rampart_ok, Identity, Raw, Server};

struct Net {
    tag: String,
    nodes: usize,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Net {
    /// Node k (1-based) lives in netns `<tag>k` as 10.213.k.2; the host end is 10.213.k.1.
    fn create(nodes: usize) -> Net {
        let tag = format!("rmp{}", std::process::id() % 100000);
        let net = Net { tag, nodes };
        for k in 1..=nodes {
            let ns = net.ns(k);
            let (host, peer) = (format!("{}h{k}", net.tag), format!("{}n{k}", net.tag));
            assert!(ip(&["netns", "add", &ns]), "ip netns add {ns}");
            assert!(ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", &peer
            ]));
            assert!(ip(&["link", "set", &peer, "netns", &ns]));
            assert!(ip(&[
                "addr",
                "add",
                &format!("10.213.{k}.1/24"),
                "dev",
                &host
            ]));
            assert!(ip(&["link", "set", &host, "up"]));
            let in_ns = |a: &[&str]| {
                let mut full = vec!["netns", "exec", &ns, "ip"];
                full.extend_from_slice(a);
                ip(&full)
            };
            assert!(in_ns(&[
                "addr",
                "add",
                &format!("10.213.{k}.2/24"),
                "dev",
                &peer
            ]));
            assert!(in_ns(&["link", "set", &peer, "up"]));
            assert!(in_ns(&["link", "set", "lo", "up"]));
        }
        net
    }

    fn ns(&self, k: usize) -> String {
        format!("{}ns{k}", self.tag)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for k in 1..=self.nodes {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{}h{k}", self.tag)])
                .status();
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(k)])
                .status();
        }
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs iproute2's `ip`".into());
    }
    None
}

fn node_ready(s: &Server, name: &str) -> bool {
    let out = s.kubectl(&["get", "node", name, "-o", "json"]);
    if !out.status.success() {
        return false;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["status"]["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .unwrap_or(false)
}

fn renew_time(s: &Server, name: &str) -> String {
    let out = s.kubectl(&["get", "lease", "-n", "kube-node-lease", name, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["spec"]["renewTime"].as_str().unwrap_or("").to_string()
}

fn lease_advances(s: &Server, name: &str, within: Duration) -> bool {
    let before = renew_time(s, name);
    eventually(within, || {
        let now = renew_time(s, name);
        !now.is_empty() && now != before
    })
}

#[test]
fn two_agents_in_netns_join_survive_ca_rotation_and_revocation_cuts_one_off() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP two_agents_in_netns...: {why}");
        return;
    }
    let net = Net::create(2);
    let s = Server::start_with(&[
        "--bind-address",
        "0.0.0.0",
        "--tls-san",
        "10.213.1.1",
        "--tls-san",
        "10.213.2.1",
    ]);
    let dd = s.data_dir().to_str().unwrap().to_string();
    let token = rampart_ok(&["token", "create", "--data-dir", &dd, "--ttl", "10m"])
        .trim()
        .to_string();
    assert!(token.starts_with("R10"), "{token}");

    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut agents = Vec::new();
    for k in 1..=2 {
        let child = Command::new("ip")
            .args(["netns", "exec", &net.ns(k), env!("CARGO_BIN_EXE_rampart")])
            .args(["agent", "--log-format", "json", "--server"])
            .arg(format!("https://10.213.{k}.1:{}", s.port))
            .args(["--token", &token, "--data-dir"])
            .arg(dirs[k - 1].path())
            .args(["--node-name", &format!("node-{k}"), "--node-ip"])
            .arg(format!("10.213.{k}.2"))
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("RAMPART_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn agent");
        agents.push(Agent(child));
    }
    for k in 1..=2 {
        let name = format!("node-{k}");
        assert!(
            eventually(Duration::from_secs(60), || node_ready(&s, &name)),
            "{name} did not become Ready"
        );
        let node = s.json(&["get", "node", &name]);
        let addrs = node["status"]["addresses"].to_string();
        assert!(addrs.contains(&format!("10.213.{k}.2")), "{addrs}");
    }
    // The nodes authenticate with their own certificates, issued through the CSR API.
    let csrs = s.json(&["get", "csr"]);
    for k in 1..=2 {
        assert!(
            csrs["items"].as_array().unwrap().iter().any(|c| {
                c["spec"]["username"] == format!("system:node:node-{k}")
                    || c["spec"]["username"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("system:bootstrap:")
            }),
            "{csrs}"
        );
    }
    // Each node's service proxy has its own identity, issued through the CSR API.
    for k in 1..=2 {
        let pki = dirs[k - 1].path().join("pki");
        assert!(
            eventually(Duration::from_secs(30), || pki
                .join("kube-proxy.crt")
                .exists()),
            "node-{k} has no proxy certificate"
        );
        let cert = std::fs::read_to_string(pki.join("kube-proxy.crt")).unwrap();
        let key = std::fs::read_to_string(pki.join("kube-proxy.key")).unwrap();
        let who = s.raw(Raw {
            identity: Identity::Pem(&cert, &key),
            ..Raw::send(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                "application/json",
                br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
            )
        });
        let v = who.json();
        assert_eq!(
            v["status"]["userInfo"]["username"],
            format!("system:kube-proxy:node-{k}"),
            "{v}"
        );
    }
    let node1_cert_before =
        std::fs::read_to_string(dirs[0].path().join("pki/kubelet-client.crt")).unwrap();

    // CA rotation while both stay Ready: the command waits until both nodes present
    // certificates of the new CA, then retires the old one.
    let out = rampart_ok(&["cert", "rotate-ca", "--data-dir", &dd, "--timeout", "120s"]);
    assert!(out.contains("old CA retired"), "{out}");
    for k in 1..=2 {
        let name = format!("node-{k}");
        assert!(node_ready(&s, &name), "{name} not Ready after rotation");
        assert!(
            lease_advances(&s, &name, Duration::from_secs(30)),
            "{name} stopped renewing its lease after the CA rotation"
        );
    }
    let node1_cert =
        std::fs::read_to_string(dirs[0].path().join("pki/kubelet-client.crt")).unwrap();
    let node1_key = std::fs::read_to_string(dirs[0].path().join("pki/kubelet-client.key")).unwrap();
    assert_ne!(
        node1_cert, node1_cert_before,
        "node-1 did not renew under the new CA"
    );
    // ...and the renewed certificate comes from the new client CA.
    let issuer = |pem: &str| {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        c.issuer().to_string()
    };
    assert_ne!(issuer(&node1_cert), issuer(&node1_cert_before));
    let client_ca = std::fs::read_to_string(s.data_dir().join("pki/client-ca.crt")).unwrap();
    let ca_subject = {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(client_ca.as_bytes()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        c.subject().to_string()
    };
    assert_eq!(issuer(&node1_cert), ca_subject);

    // Revoke node-1: cut off within seconds; node-2 carries on.
    let r = s.raw(Raw {
        identity: Identity::Pem(&node1_cert, &node1_key),
        ..Raw::get("/api/v1/nodes/node-1")
    });
    assert_eq!(
        r.status, 200,
        "node-1's current certificate should work before revocation"
    );
    rampart_ok(&["cert", "revoke", "--data-dir", &dd, "--node", "node-1"]);
    let started = std::time::Instant::now();
    let r = s.raw(Raw {
        identity: Identity::Pem(&node1_cert, &node1_key),
        ..Raw::get("/api/v1/nodes/node-1")
    });
    assert_eq!(r.status, 401);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        !lease_advances(&s, "node-1", Duration::from_secs(25)),
        "the revoked node still renews its lease"
    );
    assert!(lease_advances(&s, "node-2", Duration::from_secs(25)));
    drop(agents);
}
