//! Shared by the kubelet and runtime suites: tiny busybox images built from Debian's
//! `busybox-static` as `docker save` and OCI archives (no docker here), the root check, and a
//! guard that removes every process and cgroup a test's pods left behind.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)
#![allow(dead_code)]

pub mod pty;
pub mod registry;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";

/// Whether privileged tests can run; otherwise the reason. With
/// `RAMPART_REQUIRE_PRIVILEGED=1` a missing privilege is a failure, not a skip.
pub fn privileged() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions.
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("needs root (namespaces, mounts, cgroups)".to_string())
    } else if !Path::new(BUSYBOX).is_file() {
        Some(format!("needs {BUSYBOX} (Debian's busybox-static)"))
    } else if !Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        Some("needs cgroup v1 controllers under /sys/fs/cgroup".to_string())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(r) if std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() == Ok("1") => {
            panic!("RAMPART_REQUIRE_PRIVILEGED=1 but this test {r}")
        }
        Some(r) => Err(r),
    }
}

/// Skip (return) with a reason when not privileged.
#[macro_export]
macro_rules! require_privileged {
    () => {
        if let Err(why) = kubelet_support::privileged() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

/// One file in a layer.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, Vec<u8>, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// A layer tar from entries.
pub fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The busybox base layer: `/bin/busybox`, applet links, `/etc/passwd`, empty system dirs.
pub fn busybox_layer() -> Vec<u8> {
    let bin = std::fs::read(BUSYBOX).expect("read busybox");
    let mut entries = vec![
        Entry::Dir("bin"),
        Entry::File("bin/busybox", bin, 0o755),
        Entry::Dir("etc"),
        Entry::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
            0o644,
        ),
        Entry::File(
            "etc/group",
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            0o644,
        ),
        Entry::Dir("tmp"),
        Entry::Dir("proc"),
        Entry::Dir("sys"),
        Entry::Dir("dev"),
        Entry::Dir("root"),
    ];
    for applet in [
        "sh", "echo", "cat", "sleep", "ls", "mount", "id", "head", "wc", "grep", "true", "false",
        "hostname", "touch", "ps", "tr", "cut", "tar", "stty", "mkdir", "rm", "ln", "stat",
        "chmod", "date", "seq", "gzip", "uptime",
    ] {
        entries.push(Entry::Symlink(
            Box::leak(format!("bin/{applet}").into_boxed_str()),
            "busybox",
        ));
    }
    layer(&entries)
}

pub fn config(diff_ids: &[String], arch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An archive (tar) from (path, bytes) pairs.
pub fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// `docker save`'s legacy layout: `manifest.json`, `<config hex>.json`, `<id>/layer.tar`.
pub fn docker_archive(tag: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let cfg = config(&diff_ids, host_arch());
    let cfg_name = format!("{}.json", hex(&sha256(&cfg)));
    let mut files = vec![(cfg_name.clone(), cfg)];
    let mut paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = format!("{}{i}/layer.tar", &hex(&diff_ids[i])[..12]);
        files.push((p.clone(), l.clone()));
        paths.push(p);
    }
    let manifest = json!([{"Config": cfg_name, "RepoTags": [tag], "Layers": paths}]);
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    archive(&files)
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// An OCI image-layout archive (gzip layers), named by `io.containerd.image.name`.
pub fn oci_archive(name: &str, layers: &[Vec<u8>], arch: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let cfg = config(&diff_ids, arch);
    let mut files = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (format!("blobs/sha256/{}", hex(&sha256(&cfg))), cfg.clone()),
    ];
    let mut descs = Vec::new();
    for l in layers {
        let gz = gzip(l);
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(&gz),
            "size": gz.len(),
        }));
        files.push((format!("blobs/sha256/{}", hex(&sha256(&gz))), gz));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&cfg), "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    files.push((
        format!("blobs/sha256/{}", hex(&sha256(&manifest))),
        manifest.clone(),
    ));
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"},
        }],
    });
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    archive(&files)
}

/// Write bytes to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Removes, on drop, every process in the test's pod cgroups, the shims serving pods below
/// `data_dir`, and the cgroup directories (bottom-up) — whatever a failed test left.
pub struct Cleanup {
    pub cgroup_root: String,
    pub data_dir: PathBuf,
}

impl Cleanup {
    pub fn new(data_dir: &Path) -> Cleanup {
        Cleanup {
            cgroup_root: format!("rampart-test-{}", std::process::id()),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Host PIDs in a container's cgroup (pids controller).
    pub fn pids_of(&self, rel: &str) -> Vec<i32> {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/pids/{}/{rel}/cgroup.procs",
            self.cgroup_root
        ))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
    }

    /// The host PID of a container's own init (PID 1 in its namespace) in cgroup `rel`.
    pub fn init_pid(&self, rel: &str) -> Option<i32> {
        self.pids_of(rel).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .is_some_and(|ns| ns.split_whitespace().last() == Some("1"))
        })
    }

    /// Every cgroup directory below the root, deepest first.
    pub fn dirs(&self, controller: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::from(format!(
            "/sys/fs/cgroup/{controller}/{}",
            self.cgroup_root
        ))];
        while let Some(d) = stack.pop() {
            if !d.is_dir() {
                continue;
            }
            out.push(d.clone());
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        out
    }

    /// PIDs of shims whose command line names a directory below our data dir.
    pub fn shims(&self) -> Vec<i32> {
        let needle = self.data_dir.to_string_lossy().to_string();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("__shim") && cmd.contains(&needle) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in self.dirs("pids") {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(p) = pid.trim().parse::<i32>() {
                    // SAFETY: kill(2) of a process in our own test cgroup.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
        }
        for p in self.shims() {
            // SAFETY: kill(2) of a shim serving this test's data directory.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        // tmpfs volumes a failed test left below the data directory.
        let needle = self.data_dir.to_string_lossy().to_string();
        for line in std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
        {
            if let Some(mp) = line.split(' ').nth(4).filter(|m| m.starts_with(&needle)) {
                if let Ok(c) = std::ffi::CString::new(mp) {
                    // SAFETY: umount2(2) of a mount below this test's own data directory.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        for c in ["cpu", "cpuacct", "memory", "pids"] {
            for d in self.dirs(c) {
                let _ = std::fs::remove_dir(&d);
            }
        }
    }
}
