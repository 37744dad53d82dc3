//! Rampart ships as one statically linked binary: `ldd` must not find a dynamic loader in it.

use std::process::Command;

#[test]
fn the_binary_is_statically_linked() {
    let bin = env!("CARGO_BIN_EXE_rampart");
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .expect("ldd is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "ldd {bin} reports dynamic dependencies:\n{text}"
    );
    // And it runs.
    let version = Command::new(bin).arg("version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("rampart "));
}
