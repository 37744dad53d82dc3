//! The identity issue's end-to-end test: a server and two agents, each agent in its own network
//! namespace (a node with its own IP, reaching the server over a veth link), joining with a
//! token; both nodes become Ready; `rampart cert rotate-ca` runs while they stay Ready (their
//! leases keep renewing under certificates of the new CA); a revoked node is cut off within
//! seconds while the other carries on.
//!
//! Needs root (namespaces and links are made over rtnetlink, no `ip` binary); without it the
//! test prints why and skips (`RAMPART_REQUIRE_PRIVILEGED=1` fails instead).
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;
mod netns_support;

use std::time::Duration;

use harness::{eventually, rampart_ok, Identity, Raw, Server};
use netns_support::{Agent, HostLink, Ns};

/// Node k (1-based) lives in its own namespace as 10.213.k.2; the host end is 10.213.k.1.
struct Net {
    _links: Vec<HostLink>,
    nodes: Vec<Ns>,
    _dir: tempfile::TempDir,
}

impl Net {
    fn create(n: usize) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let tag = std::process::id() % 100_000;
        let nodes: Vec<Ns> = (1..=n)
            .map(|k| Ns::new(dir.path(), &format!("node{k}")))
            .collect();
        let links = nodes
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let k = i + 1;
                HostLink::new(
                    &format!("rmp{tag}h{k}"),
                    &format!("10.213.{k}.1/24"),
                    ns,
                    &format!("10.213.{k}.2/24"),
                )
            })
            .collect();
        Net {
            _links: links,
            nodes,
            _dir: dir,
        }
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let why = "needs root (network namespaces)".to_string();
        assert!(
            std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "RAMPART_REQUIRE_PRIVILEGED=1 but this test {why}"
        );
        return Some(why);
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
        let args: Vec<String> = [
            "agent".to_string(),
            "--log-format".into(),
            "json".into(),
            "--server".into(),
            format!("https://10.213.{k}.1:{}", s.port),
            "--token".into(),
            token.clone(),
            "--data-dir".into(),
            dirs[k - 1].path().to_str().unwrap().to_string(),
            "--node-name".into(),
            format!("node-{k}"),
            "--node-ip".into(),
            format!("10.213.{k}.2"),
        ]
        .to_vec();
        agents.push(Agent::spawn(&net.nodes[k - 1].path, args));
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
