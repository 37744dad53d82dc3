//! The `RAMPART_TEST_*` environment hooks (`src/test_hooks.rs`) are compiled into the binary
//! the end-to-end tests spawn, and into no release build: the `test-hooks` feature comes only
//! from the crate's dev-dependency on itself, which `cargo build --release` does not resolve.

use std::process::Command;

fn cargo_tree(extra: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "--prefix", "none", "--depth", "0"])
        .args(["-f", "{p}|{f}"])
        .args(extra)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The features `rampart` itself is built with under a resolution (`no-dev`: what `cargo
/// build --release` resolves; with dev-dependencies: what tests and benches resolve).
fn features(edges: &str) -> Vec<String> {
    let text = cargo_tree(&["-e", edges]);
    let line = text
        .lines()
        .find(|l| l.starts_with("rampart "))
        .unwrap_or_else(|| panic!("no rampart line in: {text}"));
    let (_, f) = line.split_once('|').unwrap_or((line, ""));
    f.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_release_build_has_no_test_hooks_and_a_test_build_has_them() {
    let release = features("features,no-dev");
    assert!(
        !release.iter().any(|f| f == "test-hooks"),
        "a release build would read RAMPART_TEST_* variables: {release:?}"
    );
    // The same question for test builds, so the check above cannot pass vacuously.
    let test = features("features");
    assert!(test.iter().any(|f| f == "test-hooks"), "{test:?}");
}

#[test]
fn the_binary_under_test_says_it_has_the_hooks() {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("version")
        .output()
        .expect("run rampart version");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("rampart "), "{text}");
    assert!(text.contains("test hooks: compiled in"), "{text}");
    // The hooks' names are in this binary (and compiled out without the feature).
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_rampart")).expect("read the binary");
    let needle = b"RAMPART_TEST_AUDIT_MAXSIZE_BYTES";
    assert!(bytes.windows(needle.len()).any(|w| w == needle));
}
