//! `rampart snapshot save|ls|restore|prune` end to end: snapshots of a running server (also
//! while writes are running), restored into a new directory that starts as the same cluster
//! (same CA, every object and Secret readable), and every damaged or wrongly keyed file refused
//! with nothing written.

mod harness;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use harness::{rampart, Raw, Server};
use serde_json::{json, Value};

const NS: &str = "snap";
const SECRET_VALUE: &str = "correct-horse-battery-staple-9f3a";

fn post(s: &Server, path: &str, body: Value) -> u16 {
    let bytes = serde_json::to_vec(&body).unwrap();
    s.raw(Raw::send("POST", path, "application/json", &bytes))
        .status
}

fn items(s: &Server, path: &str) -> Vec<Value> {
    let list = s.raw(Raw::get(path));
    assert_eq!(list.status, 200, "{}", String::from_utf8_lossy(&list.body));
    list.json()["items"].as_array().cloned().unwrap_or_default()
}

fn by_name(items: Vec<Value>) -> std::collections::BTreeMap<String, Value> {
    items
        .into_iter()
        .map(|i| (i["metadata"]["name"].as_str().unwrap().to_string(), i))
        .collect()
}

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn seed(s: &Server) {
    assert_eq!(
        post(s, "/api/v1/namespaces", json!({"metadata": {"name": NS}})),
        201
    );
    for i in 0..20 {
        let code = post(
            s,
            &format!("/api/v1/namespaces/{NS}/configmaps"),
            json!({"metadata": {"name": format!("cm-{i}"), "labels": {"n": i.to_string()}},
                   "data": {"k": "v".repeat(i * 10)}}),
        );
        assert_eq!(code, 201);
    }
    let code = post(
        s,
        &format!("/api/v1/namespaces/{NS}/secrets"),
        json!({"metadata": {"name": "db"}, "stringData": {"password": SECRET_VALUE}}),
    );
    assert_eq!(code, 201);
}

fn restore(file: &Path, dir: &Path, key: &Path) -> std::process::Output {
    rampart(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ])
}

#[test]
fn save_restore_and_compare_every_object() {
    let mut s = Server::start_with(&["--snapshot-schedule", ""]);
    s.settle();
    seed(&s);
    let data = s.data_dir().to_str().unwrap().to_string();

    // A snapshot kept on the server, and one streamed to a file of our choosing.
    let saved = rampart(&["snapshot", "save", "--data-dir", &data, "--name", "first"]);
    assert!(saved.status.success(), "{}", out_text(&saved));
    let kept = s.data_dir().join("snapshots/first.snap");
    assert!(kept.exists());
    let out_dir = tempfile::tempdir().unwrap();
    let streamed = out_dir.path().join("copy.snap");
    let saved = rampart(&[
        "snapshot",
        "save",
        "--data-dir",
        &data,
        "--name",
        "copy",
        "--output",
        streamed.to_str().unwrap(),
    ]);
    assert!(saved.status.success(), "{}", out_text(&saved));
    assert!(!s.data_dir().join("snapshots/copy.snap").exists());

    // Both are sealed: no Secret value, no private key, no store text in plaintext.
    for f in [&kept, &streamed] {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.len() > 10_000,
            "{} is suspiciously small",
            f.display()
        );
        for needle in [
            SECRET_VALUE.as_bytes(),
            b"PRIVATE KEY".as_slice(),
            b"/registry/".as_slice(),
            b"cm-19".as_slice(),
        ] {
            assert!(
                !contains(&bytes, needle),
                "{} holds {:?} in plaintext",
                f.display(),
                String::from_utf8_lossy(needle)
            );
        }
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(f).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", f.display());
    }
    let key = s.data_dir().join("snapshot.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // ls shows the kept one (newest first) with its revision.
    let ls = rampart(&["snapshot", "ls", "--data-dir", &data, "-o", "json"]);
    assert!(ls.status.success(), "{}", out_text(&ls));
    let listed: Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "first");
    assert!(listed[0]["revision"].as_u64().unwrap() > 0);

    let original_cms = by_name(items(&s, &format!("/api/v1/namespaces/{NS}/configmaps")));
    let original_secret = s
        .raw(Raw::get(&format!("/api/v1/namespaces/{NS}/secrets/db")))
        .json();
    let original_ns = by_name(items(&s, "/api/v1/namespaces"));
    let original_ca = s.ca_pem();
    s.stop();

    // Restore the streamed copy with only the file and the key file (on "another machine":
    // a directory that never saw the server).
    let machine = tempfile::tempdir().unwrap();
    let key_copy = machine.path().join("snapshot.key");
    std::fs::copy(&key, &key_copy).unwrap();
    std::fs::set_permissions(
        &key_copy,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let new_dir = tempfile::tempdir().unwrap();
    let restored = restore(&streamed, new_dir.path(), &key_copy);
    assert!(restored.status.success(), "{}", out_text(&restored));
    let mut r = Server::start_in(new_dir);
    assert_eq!(
        r.ca_pem(),
        original_ca,
        "the restored server has another CA"
    );
    let restored_cms = by_name(items(&r, &format!("/api/v1/namespaces/{NS}/configmaps")));
    assert_eq!(restored_cms.len(), original_cms.len());
    for (name, original) in &original_cms {
        // Every field, resourceVersion and uid included: the store was copied, not replayed.
        assert_eq!(&restored_cms[name], original, "configmap {name}");
    }
    let secret = r.raw(Raw::get(&format!("/api/v1/namespaces/{NS}/secrets/db")));
    assert_eq!(secret.status, 200);
    assert_eq!(secret.json(), original_secret);
    let restored_ns = by_name(items(&r, "/api/v1/namespaces"));
    assert_eq!(
        restored_ns.keys().collect::<Vec<_>>(),
        original_ns.keys().collect::<Vec<_>>()
    );
    // The restored cluster keeps working: writes land after the restored revision.
    assert_eq!(
        post(
            &r,
            &format!("/api/v1/namespaces/{NS}/configmaps"),
            json!({"metadata": {"name": "after"}})
        ),
        201
    );
    r.stop();
}

#[test]
fn a_snapshot_under_concurrent_writes_is_a_consistent_prefix() {
    let s = Arc::new(Server::start_with(&["--snapshot-schedule", ""]));
    s.settle();
    assert_eq!(
        post(&s, "/api/v1/namespaces", json!({"metadata": {"name": NS}})),
        201
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 2000 {
                let code = post(
                    &s,
                    &format!("/api/v1/namespaces/{NS}/configmaps"),
                    json!({"metadata": {"name": format!("w-{n}")}, "data": {"n": n.to_string()}}),
                );
                assert_eq!(code, 201);
                n += 1;
            }
            n
        })
    };
    // Let some writes land, then snapshot in the middle of the stream.
    assert!(harness::eventually(
        std::time::Duration::from_secs(20),
        || { items(&s, &format!("/api/v1/namespaces/{NS}/configmaps")).len() > 50 }
    ));
    let data = s.data_dir().to_str().unwrap().to_string();
    let saved = rampart(&["snapshot", "save", "--data-dir", &data, "--name", "busy"]);
    assert!(saved.status.success(), "{}", out_text(&saved));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    let writes = |items: Vec<Value>| {
        let mut m = by_name(items);
        m.retain(|name, _| name.starts_with("w-"));
        m
    };
    let all = writes(items(&s, &format!("/api/v1/namespaces/{NS}/configmaps")));
    assert_eq!(all.len(), written);

    let new_dir = tempfile::tempdir().unwrap();
    let out = restore(
        &s.data_dir().join("snapshots/busy.snap"),
        new_dir.path(),
        &s.data_dir().join("snapshot.key"),
    );
    assert!(out.status.success(), "{}", out_text(&out));
    // The restored store opens offline as a server would: start it on its own port.
    let r = Server::start_in(new_dir);
    let restored = writes(items(&r, &format!("/api/v1/namespaces/{NS}/configmaps")));
    assert!(
        restored.len() >= 50 && restored.len() <= written,
        "{} of {written}",
        restored.len()
    );
    // A prefix: the restored writes are exactly the first k of the sequence, unchanged.
    let k = restored.len();
    for n in 0..k {
        let name = format!("w-{n}");
        assert_eq!(
            restored.get(&name),
            all.get(&name),
            "write {n} of the first {k}"
        );
    }
}

#[test]
fn damaged_or_wrongly_keyed_snapshots_restore_nothing() {
    let mut s = Server::start_with(&["--snapshot-schedule", ""]);
    s.settle();
    seed(&s);
    let data = s.data_dir().to_str().unwrap().to_string();
    let saved = rampart(&["snapshot", "save", "--data-dir", &data, "--name", "good"]);
    assert!(saved.status.success(), "{}", out_text(&saved));
    s.stop();
    let good = std::fs::read(s.data_dir().join("snapshots/good.snap")).unwrap();
    let key = s.data_dir().join("snapshot.key");

    let work = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = work.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // Another valid key; a key file that others may read.
    let other_key = work.path().join("other.key");
    let out = rampart(&[
        "snapshot",
        "save",
        "--data-dir",
        "/nonexistent",
        "--name",
        "x",
    ]);
    assert!(!out.status.success());
    std::fs::write(
        &other_key,
        "rampart-snapshot-key-v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &other_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let open_key = work.path().join("open.key");
    std::fs::copy(&key, &open_key).unwrap();
    std::fs::set_permissions(
        &open_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();

    let mut flipped_body = good.clone();
    let mid = good.len() / 2;
    flipped_body[mid] ^= 0x01;
    let mut flipped_header = good.clone();
    flipped_header[30] ^= 0x80; // inside the created timestamp: authenticated as AAD
    let cases: Vec<(&str, std::path::PathBuf, &Path, &str)> = vec![
        (
            "wrong key",
            write("good.snap", &good),
            &other_key,
            "does not match",
        ),
        (
            "key readable by others",
            write("good2.snap", &good),
            &open_key,
            "chmod 600",
        ),
        (
            "truncated",
            write("trunc.snap", &good[..good.len() - 100]),
            &key,
            "truncated",
        ),
        (
            "truncated at half",
            write("half.snap", &good[..mid]),
            &key,
            "",
        ),
        (
            "bit flipped in the body",
            write("flip.snap", &flipped_body),
            &key,
            "altered",
        ),
        (
            "bit flipped in the header",
            write("hflip.snap", &flipped_header),
            &key,
            "altered",
        ),
        (
            "extended",
            write("ext.snap", &[good.as_slice(), b"junk"].concat()),
            &key,
            "",
        ),
        (
            "not a snapshot",
            write(
                "text.snap",
                b"hello, world, this is certainly not a rampart snapshot file at all",
            ),
            &key,
            "not a Rampart snapshot",
        ),
    ];
    for (name, file, key, message) in cases {
        let target = work
            .path()
            .join(format!("restored-{}", name.replace(' ', "-")));
        let out = restore(&file, &target, key);
        let text = out_text(&out);
        assert!(!out.status.success(), "{name}: restored anyway: {text}");
        assert!(
            text.contains(message),
            "{name}: expected {message:?} in {text}"
        );
        assert_eq!(
            text.trim().lines().count(),
            1,
            "{name}: one-line error: {text}"
        );
        assert!(!target.exists(), "{name}: {} was created", target.display());
        let leftovers: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".restore-"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: staging left behind");
    }
    // A non-empty target directory is never overwritten.
    let busy = work.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep"), b"mine").unwrap();
    let out = restore(&s.data_dir().join("snapshots/good.snap"), &busy, &key);
    assert!(!out.status.success());
    assert!(out_text(&out).contains("not empty"), "{}", out_text(&out));
    assert_eq!(std::fs::read(busy.join("keep")).unwrap(), b"mine");
}

#[test]
fn scheduled_snapshots_fire_and_are_pruned_to_the_retention() {
    // Every minute, keep 1: within ~70 s one scheduled snapshot exists; prune removes only
    // scheduled ones.
    let s = Server::start_with(&[
        "--snapshot-schedule",
        "* * * * *",
        "--snapshot-retention",
        "1",
    ]);
    let data = s.data_dir().to_str().unwrap().to_string();
    let saved = rampart(&["snapshot", "save", "--data-dir", &data, "--name", "manual"]);
    assert!(saved.status.success(), "{}", out_text(&saved));
    let dir = s.data_dir().join("snapshots");
    let scheduled = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("scheduled-") && n.ends_with(".snap"))
            .collect()
    };
    assert!(
        harness::eventually(std::time::Duration::from_secs(75), || !scheduled()
            .is_empty()),
        "no scheduled snapshot within 75 s"
    );
    // Make a second "scheduled" one by hand (a copy under a scheduled name with an older
    // header would be rejected by name mismatch; save one via the API instead).
    let extra = rampart(&[
        "snapshot",
        "save",
        "--data-dir",
        &data,
        "--name",
        "scheduled-1",
    ]);
    assert!(extra.status.success(), "{}", out_text(&extra));
    let pruned = rampart(&[
        "snapshot",
        "prune",
        "--data-dir",
        &data,
        "--snapshot-retention",
        "1",
    ]);
    assert!(pruned.status.success(), "{}", out_text(&pruned));
    assert_eq!(scheduled().len(), 1, "{}", out_text(&pruned));
    assert!(
        dir.join("manual.snap").exists(),
        "prune removed an on-demand snapshot"
    );
    // Bad input: an invalid schedule stops the server at start with a clear message; a bad
    // name is refused.
    let bad = rampart(&["snapshot", "save", "--data-dir", &data, "--name", "../x"]);
    assert!(!bad.status.success());
    assert!(
        out_text(&bad).contains("invalid snapshot name"),
        "{}",
        out_text(&bad)
    );
}

#[test]
fn an_invalid_schedule_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = rampart(&[
        "server",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--disable-agent",
        "--https-port",
        &harness::free_port().to_string(),
        "--snapshot-schedule",
        "every tuesday",
    ]);
    assert!(!out.status.success());
    assert!(
        out_text(&out).contains("invalid --snapshot-schedule"),
        "{}",
        out_text(&out)
    );
}
