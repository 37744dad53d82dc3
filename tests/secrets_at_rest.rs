//! Secrets are encrypted at rest by default: the store never holds their plaintext, a tampered
//! ciphertext is refused (never served), and other objects are unaffected.

mod harness;

use bytes::Bytes;
use rampart::store::{Backend, RocksBackend, RocksConfig};

const SECRET: &str = "hunter2-plaintext-canary";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_and_tampering_is_detected() {
    let mut s = harness::Server::start();
    s.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={SECRET}"),
    ]);
    s.ok(&["create", "secret", "generic", "other", "--from-literal=a=b"]);
    s.ok(&["create", "configmap", "plain", "--from-literal=visible=yes"]);
    let got = s.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    assert_eq!(got, b64, "the API serves the decrypted secret");
    use std::os::unix::fs::PermissionsExt;
    let keys = s.data_dir().join("encryption/keys.json");
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
    s.stop();

    // Straight from the store: sealed, no plaintext in any form.
    let key = "/registry/core/secrets/default/db";
    {
        let store = RocksBackend::open(RocksConfig::new(s.data_dir().join("store"))).unwrap();
        let kv = store.get(key, None).await.unwrap().unwrap();
        assert!(kv.value.starts_with(b"rampart:aesgcm:v1:"), "not sealed");
        assert!(!contains(&kv.value, SECRET.as_bytes()) && !contains(&kv.value, b64.as_bytes()));
        let cm = store
            .get("/registry/core/configmaps/default/plain", None)
            .await
            .unwrap()
            .unwrap();
        assert!(
            contains(&cm.value, b"visible"),
            "other resources stay plain"
        );
        // Tamper with one byte of the ciphertext.
        let mut bad = kv.value.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        store
            .update(key, Bytes::from(bad), kv.mod_revision)
            .await
            .unwrap();
    }
    s.boot();
    let out = s.kubectl(&["get", "secret", "db", "-o", "json"]);
    assert!(
        !out.status.success(),
        "a tampered secret must not be served"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("integrity"), "{stderr}");
    assert!(!contains(&out.stdout, SECRET.as_bytes()) && !stderr.contains(SECRET));
    // The untouched secret still reads.
    assert_eq!(
        s.ok(&["get", "secret", "other", "-o", "jsonpath={.data.a}"]),
        "Yg=="
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_resources_are_sealed_too() {
    let mut s = harness::Server::start_with(&["--encrypt-resource", "configmaps"]);
    s.ok(&[
        "create",
        "configmap",
        "cfg",
        &format!("--from-literal=k={SECRET}"),
    ]);
    assert_eq!(
        s.ok(&["get", "configmap", "cfg", "-o", "jsonpath={.data.k}"]),
        SECRET
    );
    s.stop();
    {
        let store = RocksBackend::open(RocksConfig::new(s.data_dir().join("store"))).unwrap();
        let kv = store
            .get("/registry/core/configmaps/default/cfg", None)
            .await
            .unwrap()
            .unwrap();
        assert!(kv.value.starts_with(b"rampart:aesgcm:v1:"), "not sealed");
        assert!(!contains(&kv.value, SECRET.as_bytes()));
    }
    // A malformed resource name is refused before anything starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["server", "--encrypt-resource", "Bad Name!", "--data-dir"])
        .arg(s.data_dir().join("never"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!s.data_dir().join("never").exists());
}

#[test]
fn string_data_is_stored_as_data_and_never_kept() {
    let s = harness::Server::start();
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: sd}\nstringData: {user: admin}\ndata: {other: eA==}\n",
    );
    let got = s.json(&["get", "secret", "sd"]);
    assert_eq!(got["data"]["user"], "YWRtaW4=", "{got}");
    assert_eq!(got["data"]["other"], "eA==", "{got}");
    assert!(got.get("stringData").is_none(), "{got}");
    // Updating through stringData overrides the key, as upstream.
    s.ok(&[
        "patch",
        "secret",
        "sd",
        "-p",
        r#"{"stringData":{"user":"root"}}"#,
    ]);
    let got = s.json(&["get", "secret", "sd"]);
    assert_eq!(got["data"]["user"], "cm9vdA==", "{got}");
}

#[test]
fn a_lost_key_file_stops_the_server_instead_of_replacing_the_key() {
    let mut s = harness::Server::start();
    s.ok(&["create", "secret", "generic", "kept", "--from-literal=a=b"]);
    s.stop();
    let keys = s.data_dir().join("encryption/keys.json");
    let saved = std::fs::read(&keys).unwrap();
    std::fs::remove_file(&keys).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "server",
            "--log-format",
            "json",
            "--bind-address",
            "127.0.0.1",
        ])
        .args(["--https-port", "0", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("keys.json is missing"), "{err}");
    assert!(!keys.exists(), "no new key may be created");
    // Restoring the backup brings everything back.
    std::fs::write(&keys, saved).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    s.boot();
    assert_eq!(
        s.ok(&["get", "secret", "kept", "-o", "jsonpath={.data.a}"]),
        "Yg=="
    );
}
