//! The cluster PKI end to end: layout and modes, automatic renewal without restart (open watches
//! survive), `rampart cert check|rotate|rotate-ca|revoke`, bring-your-own CA, expiry warnings,
//! and refused certificates (revoked, expired, not yet valid, foreign, retired CA).

mod harness;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{eventually, rampart_ok, Identity, Raw, Server};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

fn rampart_fails(args: &[&str]) -> String {
    let out = harness::rampart(args);
    assert!(
        !out.status.success(),
        "rampart {args:?} unexpectedly succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked"),
        "rampart {args:?} panicked: {err}"
    );
    err
}

fn pki(s: &Server, f: &str) -> String {
    std::fs::read_to_string(s.data_dir().join("pki").join(f)).expect(f)
}

fn client_cert(
    s: &Server,
    cn: &str,
    orgs: &[&str],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> (String, String) {
    s.client_cert_valid(cn, orgs, Some((not_before, not_after)))
}

fn hour() -> time::Duration {
    time::Duration::hours(1)
}

fn first_serial(pem: &str) -> String {
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
    let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
    c.raw_serial().iter().map(|b| format!("{b:02x}")).collect()
}

use rustls::pki_types::pem::PemObject;

fn get_status(s: &Server, cert: &str, key: &str) -> (u16, String) {
    let r = s.raw(Raw {
        identity: Identity::Pem(cert, key),
        // Every authenticated identity may read discovery: a 200 proves the certificate works.
        ..Raw::get("/api")
    });
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn layout_modes_chains_and_cert_check() {
    let s = Server::start();
    let dir = s.data_dir().join("pki");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".key") {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        }
    }
    let text = rampart_ok(&[
        "cert",
        "check",
        "--data-dir",
        s.data_dir().to_str().unwrap(),
    ]);
    // Leaves are signed by the separate signing CAs, which are signed by the root.
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .to_string()
    };
    assert!(line("CN=admin, O=system:masters").contains("CN=rampart-client-ca-"));
    assert!(line("CN=kube-apiserver ").contains("CN=rampart-server-ca-"));
    assert!(line("CN=system:kube-scheduler").contains("CN=rampart-client-ca-"));
    assert!(line("CN=system:kube-controller-manager").contains("rampart-client-ca-"));
    assert!(line("CN=rampart-kubelet-serving-ca-").contains("CN=rampart-root-ca-"));
    // 7-day leaves, 10-year CAs.
    assert!(line("CN=admin").contains(" 7.0 "), "{text}");
    assert!(line("CN=rampart-server-ca-").contains(" 3650.0 "), "{text}");
    assert!(pki(&s, "sa.pub").contains("PUBLIC KEY"));
    // /cacerts serves the trust bundle, unauthenticated.
    let r = s.raw(Raw {
        identity: Identity::None,
        ..Raw::get("/cacerts")
    });
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), pki(&s, "ca-bundle.crt"));

    let empty = tempfile::tempdir().unwrap();
    let err = rampart_fails(&[
        "cert",
        "check",
        "--data-dir",
        empty.path().to_str().unwrap(),
    ]);
    assert!(err.contains("no certificates under"), "{err}");
}

#[test]
fn leaves_renew_without_restart_and_watches_survive() {
    let s = Server::start_with(&["--cert-validity", "12s"]);
    let serving_before = first_serial(&pki(&s, "apiserver-serving.crt"));
    let (old_admin_cert, old_admin_key) = s.admin_identity();
    let mut watch = Command::new(harness::kubectl_bin())
        .args([
            "get",
            "namespaces",
            "-w",
            "--output-watch-events",
            "-o",
            "name",
        ])
        .env("KUBECONFIG", s.kubeconfig())
        .env("HOME", s.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Renewal at 2/3 of 12 s; wait until the old admin certificate has expired too.
    assert!(eventually(Duration::from_secs(30), || first_serial(&pki(
        &s,
        "apiserver-serving.crt"
    )) != serving_before));
    std::thread::sleep(Duration::from_secs(8));
    let (code, body) = get_status(&s, &old_admin_cert, &old_admin_key);
    assert_eq!(code, 401, "an expired certificate must be refused: {body}");
    // The rewritten kubeconfig works without a restart, and the watch opened before renewal
    // still delivers events.
    s.ok(&["create", "namespace", "after-renewal"]);
    let seen = eventually(Duration::from_secs(10), || {
        rx.try_iter().any(|l| l.contains("namespace/after-renewal"))
    });
    let _ = watch.kill();
    // The controllers run on the renewed controller-manager certificate (the first one has
    // expired by now): a new namespace still gets its default ServiceAccount.
    assert!(
        eventually(Duration::from_secs(20), || s
            .kubectl(&["get", "serviceaccount", "default", "-n", "after-renewal"])
            .status
            .success()),
        "the controllers stopped working after their certificate was renewed"
    );
    let _ = watch.wait();
    assert!(
        seen,
        "the watch opened before renewal did not deliver the event"
    );
    let events = s.json(&["get", "events", "-n", "kube-system"]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "CertificateRenewed"),
        "no CertificateRenewed event: {events}"
    );
}

#[test]
fn revoked_certificates_are_refused_at_once_and_after_restart() {
    let mut s = Server::start();
    let now = OffsetDateTime::now_utc();
    // In system:masters so her watch on namespaces is authorized: the test is about revocation.
    let (alice, alice_key) =
        client_cert(&s, "alice", &["system:masters"], now - hour(), now + hour());
    let (node, node_key) = client_cert(
        &s,
        "system:node:n1",
        &["system:nodes"],
        now - hour(),
        now + hour(),
    );
    assert_eq!(get_status(&s, &alice, &alice_key).0, 200);
    assert_eq!(get_status(&s, &node, &node_key).0, 200);

    // An open watch with alice's certificate is cut when it is revoked.
    let kc = s.data_dir().join("alice.kubeconfig");
    let b64 = |x: &str| base64_encode(x.as_bytes());
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{}', certificate-authority-data: {}}}}}]\nusers: [{{name: a, user: {{client-certificate-data: {}, client-key-data: {}}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: a}}}}]\ncurrent-context: x\n",
            s.port,
            b64(&pki(&s, "ca-bundle.crt")),
            b64(&alice),
            b64(&alice_key)
        ),
    )
    .unwrap();
    let mut watch = Command::new(harness::kubectl_bin())
        .args(["get", "namespaces", "-w", "-o", "name"])
        .env("KUBECONFIG", &kc)
        .env("HOME", s.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl watch");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        watch.try_wait().unwrap().is_none(),
        "the watch should be running"
    );

    let dd = s.data_dir().to_str().unwrap().to_string();
    let serial = first_serial(&alice);
    let out = rampart_ok(&["cert", "revoke", "--data-dir", &dd, &serial]);
    assert!(out.contains(&serial), "{out}");
    let (code, body) = get_status(&s, &alice, &alice_key);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
    // The watch opened before the revocation is closed by the server: kubectl's `get -w`
    // ends when its stream does.
    let cut = eventually(Duration::from_secs(10), || {
        watch.try_wait().unwrap().is_some()
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(cut, "the revoked certificate's open watch kept running");

    rampart_ok(&["cert", "revoke", "--data-dir", &dd, "--node", "n1"]);
    assert_eq!(get_status(&s, &node, &node_key).0, 401);
    // Admin is unaffected; the list survives a restart.
    assert_eq!(
        get_status(&s, &s.admin_identity().0, &s.admin_identity().1).0,
        200
    );
    s.stop();
    s.boot();
    assert_eq!(get_status(&s, &alice, &alice_key).0, 401);
    assert_eq!(get_status(&s, &node, &node_key).0, 401);
    let list = s
        .raw(Raw::get("/rampart/v1/certificates/revocations"))
        .json();
    assert_eq!(list["revocations"].as_array().unwrap().len(), 2, "{list}");

    // Bad input changes nothing.
    let err = rampart_fails(&["cert", "revoke", "--data-dir", &dd, "not-hex!"]);
    assert!(err.contains("serial must be"), "{err}");
    let err = rampart_fails(&["cert", "rotate", "--data-dir", &dd, "--service", "bogus"]);
    assert!(err.contains("unknown service"), "{err}");
    let list = s
        .raw(Raw::get("/rampart/v1/certificates/revocations"))
        .json();
    assert_eq!(list["revocations"].as_array().unwrap().len(), 2);
    // Only system:masters may use the operations.
    let (bob, bob_key) = client_cert(&s, "bob", &["devs"], now - hour(), now + hour());
    let r = s.raw(Raw {
        identity: Identity::Pem(&bob, &bob_key),
        ..Raw::send(
            "POST",
            "/rampart/v1/certificates/revocations",
            "application/json",
            br#"{"node":"n2"}"#,
        )
    });
    assert_eq!(r.status, 403);
    let r = s.raw(Raw::send(
        "POST",
        "/rampart/v1/certificates/revocations",
        "application/json",
        b"{nope",
    ));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["kind"], "Status");
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn refused_certificates_expired_not_yet_valid_foreign() {
    let s = Server::start();
    let now = OffsetDateTime::now_utc();
    let (expired, k1) = client_cert(&s, "late", &[], now - hour() * 3, now - hour());
    let (future, k2) = client_cert(&s, "early", &[], now + hour(), now + hour() * 3);
    for (c, k) in [(&expired, &k1), (&future, &k2)] {
        let (code, body) = get_status(&s, c, k);
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
    }
    // A certificate from a CA the cluster does not know.
    let foreign_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "evil-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&foreign_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), &foreign_key).unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name.push(DnType::CommonName, "admin");
    leaf.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    let lk = KeyPair::generate().unwrap();
    let lc = leaf.signed_by(&lk, &issuer).unwrap();
    let (code, _) = get_status(&s, &lc.pem(), &lk.serialize_pem());
    assert_eq!(code, 401);
}

#[test]
fn rotate_ca_overlaps_then_retires_the_old_ca() {
    let s = Server::start();
    let dd = s.data_dir().to_str().unwrap().to_string();
    let old_bundle = pki(&s, "ca-bundle.crt");
    let (old_admin, old_admin_key) = s.admin_identity();
    // Begin only: the overlap phase.
    let r = s.raw(Raw::send(
        "POST",
        "/rampart/v1/certificates/rotate-ca",
        "application/json",
        br#"{"phase":"begin"}"#,
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let bundle = pki(&s, "ca-bundle.crt");
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        2,
        "new and old roots trusted"
    );
    // A client that knows only the old root still verifies the server (cross-signed chain),
    // and the old admin certificate is still accepted.
    let r = s.raw_with_ca(
        &old_bundle,
        Raw {
            identity: Identity::Pem(&old_admin, &old_admin_key),
            ..Raw::get("/api/v1/namespaces/default")
        },
    );
    assert_eq!(r.status, 200);
    s.ok(&["get", "namespaces"]);
    let err = {
        let r = s.raw(Raw::send(
            "POST",
            "/rampart/v1/certificates/rotate-ca",
            "application/json",
            br#"{"phase":"begin"}"#,
        ));
        assert_eq!(r.status, 409);
        r.json()["message"].as_str().unwrap().to_string()
    };
    assert!(err.contains("already in progress"), "{err}");
    // The CLI finishes it (no nodes to wait for).
    let out = rampart_ok(&["cert", "rotate-ca", "--data-dir", &dd, "--timeout", "10s"]);
    assert!(out.contains("old CA retired"), "{out}");
    assert_eq!(
        pki(&s, "ca-bundle.crt")
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );
    assert!(!pki(&s, "ca-bundle.crt").contains(old_bundle.trim()));
    s.ok(&["get", "namespaces"]);
    let (code, _) = get_status(&s, &old_admin, &old_admin_key);
    assert_eq!(code, 401, "certificates of the retired CA are refused");
    assert!(
        !s.handshake_ok(&old_bundle),
        "the old root alone no longer verifies the server"
    );
    // The controllers follow: kube-root-ca.crt publishes the new bundle.
    let bundle = pki(&s, "ca-bundle.crt");
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = s.kubectl(&[
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ]);
            String::from_utf8_lossy(&out.stdout) == bundle
        }),
        "kube-root-ca.crt still holds the old bundle"
    );
}

fn make_ca(params: &CertificateParams, key: &KeyPair, issuer: Option<(&str, &KeyPair)>) -> String {
    match issuer {
        None => params.self_signed(key).unwrap().pem(),
        Some((pem, k)) => params
            .signed_by(key, &Issuer::from_ca_cert_pem(pem, k).unwrap())
            .unwrap()
            .pem(),
    }
}

fn ca_params(cn: &str, days: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - hour();
    p.not_after = now + time::Duration::days(days);
    p
}

fn prepare_dir(files: &[(&str, &str, u32)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (name, text, mode) in files {
        let p = pki.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    dir
}

#[test]
fn bring_your_own_ca_and_expiry_warning() {
    // The user's CA expires in 30 days: the server uses it and warns (Event + metric).
    let key = KeyPair::generate().unwrap();
    let cert = make_ca(&ca_params("acme-root", 30), &key, None);
    let dir = prepare_dir(&[
        ("ca.crt", &cert, 0o644),
        ("ca.key", &key.serialize_pem(), 0o600),
    ]);
    let s = Server::start_in(dir);
    assert_eq!(pki(&s, "ca-bundle.crt"), cert);
    s.ok(&["get", "namespaces"]);
    let text = rampart_ok(&[
        "cert",
        "check",
        "--data-dir",
        s.data_dir().to_str().unwrap(),
    ]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("CN=rampart-client-ca-") && l.contains("CN=acme-root")),
        "{text}"
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let ev = s.json(&["get", "events", "-n", "kube-system"]);
            ev["items"].as_array().unwrap().iter().any(|e| {
                e["reason"] == "CertificateExpiringSoon"
                    && e["type"] == "Warning"
                    && e["message"].as_str().unwrap_or("").contains("acme-root")
            })
        }),
        "no CertificateExpiringSoon event"
    );
    let metrics = s.ok(&["get", "--raw", "/metrics"]);
    let ca_line = metrics
        .lines()
        .find(|l| l.starts_with("rampart_certificate_expiration_seconds{name=\"ca\""))
        .expect("ca metric");
    let secs: f64 = ca_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs < 31.0 * 86400.0 && secs > 29.0 * 86400.0, "{ca_line}");
}

#[test]
fn bring_your_own_intermediate_under_a_user_root() {
    let root_key = KeyPair::generate().unwrap();
    let root = make_ca(&ca_params("acme-root", 3650), &root_key, None);
    let int_key = KeyPair::generate().unwrap();
    let int = make_ca(
        &ca_params("acme-k8s", 1000),
        &int_key,
        Some((&root, &root_key)),
    );
    let chain = format!("{int}{root}");
    let dir = prepare_dir(&[
        ("ca.crt", &chain, 0o644),
        ("ca.key", &int_key.serialize_pem(), 0o600),
    ]);
    let s = Server::start_in(dir);
    // Clients trust the user's root; the server's chain reaches it through the intermediate.
    assert_eq!(pki(&s, "ca-bundle.crt"), root);
    assert!(s.handshake_ok(&root));
    s.ok(&["get", "namespaces"]);
}

#[test]
fn broken_pki_directories_stop_the_server_with_a_message() {
    let key = KeyPair::generate().unwrap();
    let cert = make_ca(&ca_params("half", 30), &key, None);
    let cases: Vec<(tempfile::TempDir, &str)> = vec![
        (prepare_dir(&[("ca.crt", &cert, 0o644)]), "only one of"),
        (
            prepare_dir(&[
                ("ca.crt", &cert, 0o644),
                ("ca.key", &key.serialize_pem(), 0o644),
            ]),
            "readable by others",
        ),
        (
            prepare_dir(&[
                ("ca.crt", "garbage", 0o644),
                ("ca.key", &key.serialize_pem(), 0o600),
            ]),
            "not a valid PEM",
        ),
        (
            prepare_dir(&[
                ("ca.crt", &cert, 0o644),
                (
                    "ca.key",
                    &KeyPair::generate().unwrap().serialize_pem(),
                    0o600,
                ),
            ]),
            "does not match the key",
        ),
    ];
    for (dir, expect) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args([
                "server",
                "--log-format",
                "json",
                "--bind-address",
                "127.0.0.1",
                "--https-port",
                "0",
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "server started on a broken PKI ({expect})"
        );
        assert!(err.contains(expect), "expected {expect:?} in: {err}");
        assert!(
            !err.contains("PRIVATE KEY"),
            "key material in an error: {err}"
        );
    }
}
