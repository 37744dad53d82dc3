//! Shared by the install suites: a throwaway signing key, a `file://` mirror made by
//! `tools/release.sh`, and a `Target` that points every install path into a temp dir.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where one install puts things, all inside a temp dir.
pub struct Target {
    pub bin: PathBuf,
    pub systemd: PathBuf,
    pub data: PathBuf,
    pub config: PathBuf,
}

impl Target {
    pub fn new(root: &Path, name: &str) -> Self {
        let base = root.join(name);
        Target {
            bin: base.join("bin"),
            systemd: base.join("systemd"),
            data: base.join("data"),
            config: base.join("etc"),
        }
    }

    pub fn install(
        &self,
        mirror: &Path,
        public_key: Option<&Path>,
        extra: &[(&str, &str)],
    ) -> Output {
        let mut cmd = Command::new("sh");
        cmd.arg(repo().join("install/install.sh"))
            .env_remove("RAMPART_URL")
            .env_remove("RAMPART_TOKEN")
            .env_remove("INSTALL_RAMPART_PUBLIC_KEY")
            .env(
                "INSTALL_RAMPART_MIRROR",
                format!("file://{}", mirror.display()),
            )
            .env("INSTALL_RAMPART_BIN_DIR", &self.bin)
            .env("INSTALL_RAMPART_SYSTEMD_DIR", &self.systemd)
            .env("INSTALL_RAMPART_DATA_DIR", &self.data)
            .env("INSTALL_RAMPART_CONFIG_DIR", &self.config)
            .env("INSTALL_RAMPART_SKIP_START", "true");
        if let Some(k) = public_key {
            cmd.env("INSTALL_RAMPART_PUBLIC_KEY", k);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        run(&mut cmd)
    }

    /// Nothing at all was written: the refusal happened before any file was touched.
    pub fn assert_nothing_installed(&self, why: &str) {
        for dir in [&self.bin, &self.systemd, &self.data, &self.config] {
            assert!(!dir.exists(), "{why}: {} was created", dir.display());
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("command starts")
}

/// A throwaway Ed25519 key pair (PEM files) made with openssl, as a mirror's owner would.
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let out = run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    assert!(out.status.success(), "{}", text(&out));
    (key, public)
}

pub fn release(mirror: &Path, key: &Path, version: Option<&str>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(repo().join("tools/release.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_rampart"))
        .arg("--signing-key")
        .arg(key)
        .arg("--out")
        .arg(mirror);
    if let Some(v) = version {
        cmd.args(["--version", v]);
    }
    run(&mut cmd)
}

pub fn mirror_with(dir: &Path, key: &Path) -> PathBuf {
    let mirror = dir.join("mirror");
    let out = release(&mirror, key, None);
    assert!(out.status.success(), "release.sh: {}", text(&out));
    mirror
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes: the child is reaped by wait() below.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Effective uid 0, read from /proc so the test needs no unsafe call.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}
