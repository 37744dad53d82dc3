//! `rampart images import|ls|rm` against real archives built here from Debian's
//! `busybox-static`: both `docker save` layouts and OCI archives, layers shared between
//! images, whiteouts (incl. an opaque whiteout after files of its own directory) and hard
//! links unpacked into overlayfs' format, and bad archives (truncated, lying digests,
//! another architecture, not a tar) refused with one line while the store stays unchanged.
//! Root is needed (ownership, whiteout devices, trusted xattrs); skipped with a reason otherwise.

mod kubelet_support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Output;

use kubelet_support::{Entry, *};

fn rampart(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart")
}

fn images(data: &Path, args: &[&str]) -> Output {
    let mut a = vec!["images"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--data-dir", data.to_str().unwrap()]);
    rampart(&a)
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A snapshot of the store: index text and the set of layer directories.
fn snapshot(data: &Path) -> (String, Vec<String>, usize) {
    let c = data.join("content");
    let index = std::fs::read_to_string(c.join("images.json")).unwrap_or_default();
    let mut layers: Vec<String> = std::fs::read_dir(c.join("layers/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into())
                .collect()
        })
        .unwrap_or_default();
    layers.sort();
    let tmp = std::fs::read_dir(c.join("tmp"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    (index, layers, tmp)
}

#[test]
fn imports_both_layouts_and_shares_layers() {
    require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let base = busybox_layer();
    let docker = write(
        dir.path(),
        "docker.tar",
        &docker_archive("busybox:docker", std::slice::from_ref(&base)),
    );
    let oci = write(
        dir.path(),
        "oci.tar",
        &oci_archive(
            "docker.io/library/busybox:oci",
            std::slice::from_ref(&base),
            host_arch(),
        ),
    );

    let out = ok(images(&data, &["import", docker.to_str().unwrap()]));
    assert!(
        out.contains("Loaded image: docker.io/library/busybox:docker"),
        "{out}"
    );
    let out = ok(images(&data, &["import", oci.to_str().unwrap()]));
    assert!(
        out.contains("Loaded image: docker.io/library/busybox:oci"),
        "{out}"
    );

    let ls = ok(images(&data, &["ls"]));
    assert!(ls.contains("docker.io/library/busybox:docker"), "{ls}");
    assert!(ls.contains("docker.io/library/busybox:oci"), "{ls}");
    // Same content → the same image id and one unpacked layer.
    let (_, layers, tmp) = snapshot(&data);
    assert_eq!(
        layers,
        vec![sha256(&base).trim_start_matches("sha256:").to_string()]
    );
    assert_eq!(tmp, 0, "staging left behind");
    let layer_dir = data.join("content/layers/sha256").join(&layers[0]);
    let bb = std::fs::metadata(layer_dir.join("bin/busybox")).unwrap();
    assert_eq!(bb.mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(layer_dir.join("bin/sh"))
            .unwrap()
            .to_str(),
        Some("busybox")
    );

    // Removing one name keeps the image for the other; removing the last deletes the layer.
    let out = ok(images(&data, &["rm", "busybox:docker"]));
    assert!(
        out.contains("Untagged: docker.io/library/busybox:docker"),
        "{out}"
    );
    assert!(layer_dir.is_dir());
    let out = ok(images(&data, &["rm", "busybox:oci"]));
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(!layer_dir.exists(), "layer kept after its last image went");
    let ls = ok(images(&data, &["ls", "-q"]));
    assert!(ls.trim().is_empty(), "{ls}");
    let o = images(&data, &["rm", "busybox:oci"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
}

#[test]
fn whiteouts_and_hardlinks_become_overlayfs_format() {
    require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let base = busybox_layer();
    // The opaque marker comes after a file of its own directory: it must still apply to
    // the directory (hiding lower layers only), and the file must stay.
    let top = layer(&[
        Entry::Dir("etc"),
        Entry::File("etc/.wh.group", Vec::new(), 0o644),
        Entry::Dir("tmp"),
        Entry::File("tmp/new", b"new".to_vec(), 0o644),
        Entry::File("tmp/.wh..wh..opq", Vec::new(), 0o644),
        Entry::Dir("data"),
        Entry::File("data/a", b"same inode".to_vec(), 0o600),
        Entry::Hardlink("data/b", "data/a"),
    ]);
    let arc = write(
        dir.path(),
        "layered.tar",
        &docker_archive("layered:1", &[base, top.clone()]),
    );
    ok(images(&data, &["import", arc.to_str().unwrap()]));
    let l = data
        .join("content/layers/sha256")
        .join(sha256(&top).trim_start_matches("sha256:"));
    let wh = std::fs::symlink_metadata(l.join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "whiteout is not a char device"
    );
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        xattr::get(l.join("tmp"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(std::fs::read(l.join("tmp/new")).unwrap(), b"new");
    assert!(!l.join("tmp/.wh..wh..opq").exists());
    let a = std::fs::metadata(l.join("data/a")).unwrap();
    let b = std::fs::metadata(l.join("data/b")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link unpacked as a copy");
}

#[test]
fn bad_archives_are_refused_and_change_nothing() {
    require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let base = busybox_layer();
    let good = docker_archive("busybox:good", std::slice::from_ref(&base));
    let p = write(dir.path(), "good.tar", &good);
    ok(images(&data, &["import", p.to_str().unwrap()]));
    let before = snapshot(&data);

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // Cut in the middle of the layer.
    cases.push(("truncated", good[..good.len() / 2].to_vec(), "truncated"));
    // A layer whose content does not match the config's diff_id (the config names the
    // busybox layer, the archive carries another one).
    let other = layer(&[Entry::File("x", b"x".to_vec(), 0o644)]);
    let cfg = config(&[sha256(&base)], host_arch());
    let cfg_name = format!("{}.json", sha256(&cfg).trim_start_matches("sha256:"));
    let manifest = serde_json::json!([
        {"Config": cfg_name, "RepoTags": ["busybox:lie"], "Layers": ["l/layer.tar"]}
    ]);
    let lying = archive(&[
        (cfg_name.clone(), cfg),
        ("l/layer.tar".into(), other),
        (
            "manifest.json".into(),
            serde_json::to_vec(&manifest).unwrap(),
        ),
    ]);
    cases.push(("diff_id lie", lying, "does not match"));
    // An OCI blob stored under a digest that is not its own.
    let mut oci = oci_archive(
        "docker.io/library/busybox:bad",
        std::slice::from_ref(&base),
        host_arch(),
    );
    // Flip a byte inside the config blob's content ("linux" → "linuy").
    let pos = find(&oci, br#""os":"linux""#).expect("config in archive");
    oci[pos + 10] = b'y';
    cases.push(("blob digest lie", oci, "has digest"));
    cases.push((
        "other architecture",
        oci_archive(
            "docker.io/library/busybox:arm",
            std::slice::from_ref(&base),
            if host_arch() == "amd64" {
                "arm64"
            } else {
                "amd64"
            },
        ),
        "is for architecture",
    ));
    cases.push((
        "not a tar",
        b"hello, this is not an archive at all".to_vec(),
        "not",
    ));
    cases.push(("empty tar", archive(&[]), "not"));

    for (name, bytes, want) in cases {
        let p = write(dir.path(), "bad.tar", &bytes);
        let o = images(&data, &["import", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{name}: accepted");
        assert_eq!(err.trim().lines().count(), 1, "{name}: not one line: {err}");
        assert!(err.starts_with("rampart: "), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert_eq!(snapshot(&data), before, "{name}: the store changed");
    }
    let ls = ok(images(&data, &["ls"]));
    assert!(ls.contains("busybox:good"), "{ls}");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
