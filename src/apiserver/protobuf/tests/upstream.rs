//! Upstream's round-trip fixtures: `<group>.<version>.<Kind>.pb` as Go's protobuf
//! serializer wrote it, `.json` as Go's JSON serializer wrote the same object.
//!
//! A selection is vendored in `proto/testdata/`; set `K8S_TESTDATA` to a
//! directory holding the full set (e.g.
//! `/usr/share/gocode/src/k8s.io/api/testdata/HEAD` from golang-k8s-api-dev) to
//! check every kind.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::super::decode;

/// Decodes every `<name>.pb` in `dir` and compares with `<name>.json`.
fn check_fixture_dir(dir: &Path) -> usize {
    let mut pbs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pb"))
        // Watch frames are never request bodies and carry no TypeMeta.
        .filter(|p| !p.to_string_lossy().ends_with(".WatchEvent.pb"))
        .collect();
    pbs.sort();
    let mut failures = Vec::new();
    for pb in &pbs {
        let body = std::fs::read(pb).expect("read pb");
        let want: Value =
            serde_json::from_slice(&std::fs::read(pb.with_extension("json")).expect("read json"))
                .expect("json");
        match decode(&body) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{}: {}",
                pb.display(),
                first_difference(&want, &got, "")
            )),
            Err(e) => failures.push(format!("{}: {e}", pb.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failures.len(),
        pbs.len(),
        failures.join("\n")
    );
    pbs.len()
}

fn first_difference(want: &Value, got: &Value, path: &str) -> String {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    None => return format!("{path}.{k}: missing (want {wv})"),
                    Some(gv) if gv != wv => {
                        return first_difference(wv, gv, &format!("{path}.{k}"))
                    }
                    _ => {}
                }
            }
            let extra: Vec<&String> = g.keys().filter(|k| !w.contains_key(*k)).collect();
            format!("{path}: unexpected keys {extra:?}")
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| first_difference(a, b, &format!("{path}[{i}]")))
            .unwrap_or_default(),
        _ => format!("{path}: want {want}, got {got}"),
    }
}

#[test]
fn upstream_fixtures_checked_in() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/testdata");
    assert!(check_fixture_dir(&dir) >= 20);
}

#[test]
fn upstream_fixtures_all_kinds() {
    // Opt-in: the full upstream set is 2.8 MB and not vendored.
    if let Ok(dir) = std::env::var("K8S_TESTDATA") {
        check_fixture_dir(Path::new(&dir));
    }
}
