//! Secrets encryption key rotation (`rampart secrets-encrypt`): a rotation leaves every secret
//! readable with unchanged data, under the new key only, with the old key gone from keys.json;
//! `kill -9` at random moments (including mid-write of the key file) never leaves a server that
//! fails to start or to read a secret, and the rotation completes after restarts; bad requests
//! get the right Status and a corrupt key file stops the server with one line naming it.

mod harness;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use harness::{eventually, Identity, Raw, Server};
use rampart::store::{Backend, RangeRequest, RocksBackend, RocksConfig};
use rand::Rng;

const STATUS: &str = "/rampart/v1/secrets-encrypt/status";
const ROTATE: &str = "/rampart/v1/secrets-encrypt/rotate-keys";
const SECRETS: &str = "/registry/core/secrets/";

fn secret_yaml(name: &str, value: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ndata:\n  v: {b64}\n")
}

fn create_secrets(s: &Server, n: usize) -> BTreeMap<String, String> {
    let mut yaml = String::new();
    let mut want = BTreeMap::new();
    for i in 0..n {
        let (name, value) = (format!("s{i:03}"), format!("value-{i}"));
        yaml.push_str(&secret_yaml(&name, &value));
        yaml.push_str("---\n");
        want.insert(name, value);
    }
    s.ok_in(&["create", "-f", "-"], &yaml);
    want
}

/// Every secret reads back (one list call) with exactly the expected data.
fn assert_secrets(s: &Server, want: &BTreeMap<String, String>) {
    use base64::Engine;
    let list = s.json(&["get", "secrets"]);
    let mut got = BTreeMap::new();
    for item in list["items"].as_array().expect("items") {
        let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
        if let Some(v) = item["data"]["v"].as_str() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v)
                .expect("base64 data");
            got.insert(name, String::from_utf8(raw).expect("utf-8"));
        }
    }
    assert_eq!(got.len(), want.len(), "secrets missing");
    for (name, value) in want {
        assert_eq!(got.get(name), Some(value), "secret {name} differs");
    }
}

fn status(s: &Server) -> serde_json::Value {
    let r = s.raw(Raw::get(STATUS));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn key_ids(s: &Server) -> Vec<String> {
    let text = std::fs::read_to_string(s.data_dir().join("encryption/keys.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

fn cli(s: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("secrets-encrypt")
        .args(args)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .output()
        .expect("run rampart secrets-encrypt")
}

fn kill9(s: &mut Server) {
    if let Some(mut child) = s.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keys_through_the_cli() {
    let mut s = Server::start();
    let want = create_secrets(&s, 40);
    let before = status(&s);
    assert_eq!(before["writeKey"], "key1");
    assert_eq!(before["stage"], "idle");
    assert_eq!(before["objects"]["key1"], 40);
    let rev_before: u64 = s
        .json(&["get", "secret", "s000"])
        .pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok())
        .expect("resourceVersion");

    let out = cli(&s, &["rotate-keys", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("key2"), "{stdout}");

    let out = cli(&s, &["status", "-o", "json"]);
    assert!(out.status.success());
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(after["writeKey"], "key2");
    assert_eq!(after["readableKeys"], serde_json::json!(["key2"]));
    assert_eq!(after["stage"], "done");
    assert_eq!(after["running"], false);
    assert_eq!(after["objects"], serde_json::json!({"key2": 40}));
    let table = cli(&s, &["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("Write key:") && table.contains("done"),
        "{table}"
    );
    assert_secrets(&s, &want);
    assert_eq!(key_ids(&s), vec!["key2".to_string()]);
    s.stop();

    // Straight from the store: every live value under key2, and no older revision (which would
    // hold key1 ciphertexts) is readable any more.
    let store = RocksBackend::open(RocksConfig::new(s.data_dir().join("store"))).unwrap();
    let resp = store
        .range(RangeRequest {
            prefix: SECRETS.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(resp.items.len() >= 40);
    for kv in &resp.items {
        assert!(
            kv.value.starts_with(b"rampart:aesgcm:v1:key2:"),
            "{} is not under key2",
            kv.key
        );
    }
    assert!(store.compacted_revision() > rev_before);
    assert!(store
        .get(&format!("{SECRETS}default/s000"), Some(rev_before))
        .await
        .is_err());
}

#[test]
fn kill_nine_during_rotation_never_loses_a_secret() {
    // Slow batches (and key-file writes) so the kills land mid-rotation.
    std::env::set_var("RAMPART_TEST_ROTATION_BATCH_DELAY_MS", "300");
    let mut s = Server::start();
    let mut want = create_secrets(&s, 300);
    let mut rng = rand::rng();
    // First, a kill in the middle of a key-file write (temporary file written, not renamed).
    let tmp = s.data_dir().join("encryption/keys.json.tmp");
    let r = s.raw(Raw::send(POST, ROTATE, "application/json", b""));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        eventually(Duration::from_secs(20), || tmp.exists()),
        "no key-file write seen"
    );
    kill9(&mut s);
    eprintln!(
        "temporary key file left by the first kill: {}",
        tmp.exists()
    );
    s.boot();
    assert_secrets(&s, &want);

    let mut stages = Vec::new();
    let mut mid_file_write = 0;
    for cycle in 0..10 {
        let st = status(&s);
        if st["running"] == false {
            let r = s.raw(Raw::send(POST, ROTATE, "application/json", b""));
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        }
        // A client write racing the rotation.
        let name = format!("s{:03}", cycle * 7);
        let value = format!("changed-{cycle}");
        s.ok_in(&["replace", "-f", "-"], &secret_yaml(&name, &value));
        want.insert(name, value);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..2500)));
        stages.push(status(&s)["stage"].as_str().unwrap_or("").to_string());
        kill9(&mut s);
        if s.data_dir().join("encryption/keys.json.tmp").exists() {
            mid_file_write += 1;
        }
        s.boot();
        assert_secrets(&s, &want);
    }
    eprintln!("stages at kill time: {stages:?}; left a temporary key file: {mid_file_write}");
    assert!(
        stages
            .iter()
            .any(|st| st == "re-encrypting" || st == "key-added"),
        "no kill landed mid-rotation: {stages:?}"
    );
    // The last rotation finishes on its own after the restart.
    assert!(
        eventually(Duration::from_secs(60), || {
            let st = status(&s);
            st["stage"] == "done" && st["running"] == false
        }),
        "rotation did not complete: {}",
        status(&s)
    );
    let st = status(&s);
    let write = st["writeKey"].as_str().unwrap().to_string();
    assert_eq!(key_ids(&s), vec![write.clone()]);
    assert_eq!(st["objects"], serde_json::json!({ write: 300 }));
    assert_secrets(&s, &want);
}

const POST: &str = "POST";

#[test]
fn crash_between_adding_and_switching_keys_starts_fine() {
    use base64::Engine;
    let mut s = Server::start();
    let want = create_secrets(&s, 20);
    s.stop();
    // keys.json as a crash right after stage 1 leaves it: a second readable key, old one writes.
    let path = s.data_dir().join("encryption/keys.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": "key2", "secret": secret}));
    doc["rotation"] = serde_json::json!({"stage": "key-added", "from": "key1", "to": "key2"});
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    // A leftover temporary file from the interrupted write is ignored.
    std::fs::write(path.with_extension("json.tmp"), b"{\"write\": \"key").unwrap();

    s.boot();
    assert_secrets(&s, &want);
    assert!(
        eventually(Duration::from_secs(30), || status(&s)["stage"] == "done"),
        "{}",
        status(&s)
    );
    assert_eq!(status(&s)["writeKey"], "key2");
    assert_eq!(key_ids(&s), vec!["key2".to_string()]);
    assert_secrets(&s, &want);
}

/// A plain user, signed by the client CA (the only CA that issues client identities).
fn non_admin_identity(s: &Server) -> (String, String) {
    s.client_cert("alice", &["developers"])
}

fn expect_status(r: &harness::RawResponse, code: u16, reason: &str) {
    assert_eq!(r.status, code, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], code);
}

#[test]
fn bad_requests_get_statuses_and_a_corrupt_key_file_stops_the_server() {
    std::env::set_var("RAMPART_TEST_ROTATION_BATCH_DELAY_MS", "1500");
    let mut s = Server::start();
    create_secrets(&s, 5);
    expect_status(
        &s.raw(Raw::get("/rampart/v1/secrets-encrypt/nope")),
        404,
        "NotFound",
    );
    expect_status(&s.raw(Raw::get(ROTATE)), 405, "MethodNotAllowed");
    let (cert, key) = non_admin_identity(&s);
    for (method, path) in [("GET", STATUS), ("POST", ROTATE)] {
        let r = s.raw(Raw {
            identity: Identity::Pem(&cert, &key),
            ..Raw::send(method, path, "application/json", b"")
        });
        expect_status(&r, 403, "Forbidden");
    }
    assert_eq!(
        status(&s)["stage"],
        "idle",
        "a refused request changed nothing"
    );

    let first = s.raw(Raw::send(POST, ROTATE, "application/json", b""));
    assert_eq!(first.status, 202);
    assert_eq!(first.json()["running"], true);
    expect_status(
        &s.raw(Raw::send(POST, ROTATE, "application/json", b"")),
        409,
        "Conflict",
    );
    let out = cli(&s, &["rotate-keys"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("already running"), "{err}");
    s.stop();

    // Corrupt key files: the server refuses to start, one line naming the file, no key material.
    let path = s.data_dir().join("encryption/keys.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&original).unwrap();
    let material = doc["keys"][0]["secret"].as_str().unwrap().to_string();
    let truncated = original[..original.len() / 2].to_string();
    let wrong_type = format!("{{\"write\": \"key1\", \"keys\": \"{material}\"}}");
    let short_key = original.replace(&material, &material[..20]);
    for bad in [truncated, wrong_type, short_key] {
        std::fs::write(&path, &bad).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["server", "--bind-address", "127.0.0.1", "--https-port"])
            .arg(harness::free_port().to_string())
            .arg("--data-dir")
            .arg(s.data_dir())
            .output()
            .expect("run rampart server");
        assert!(!out.status.success(), "started with a corrupt keys.json");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.trim().lines().last().unwrap_or("");
        assert!(last.contains("keys.json"), "{err}");
        assert!(!err.contains(&material[..20]), "key material leaked: {err}");
    }
}
