//! The signed one-command install, end to end: `tools/release.sh` builds a `file://` mirror with
//! a test key, `install/install.sh` (run by `/bin/sh`, dash on Debian: POSIX only) installs from
//! it, and every way a download can be wrong — tampered binary, tampered SHA256SUMS, wrong key,
//! bad version — is refused with nothing installed. The uninstall test runs the real scripts
//! against a real running `rampart` and checks that nothing is left behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod install_support;
use install_support::{
    alive, free_port, is_root, keypair, mirror_with, release, repo, run, text, Target,
};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `systemd-analyze verify` of a unit: exit 0 and no "unknown key" style complaints.
fn verify_unit(unit: &Path) {
    let out = run(Command::new("systemd-analyze").arg("verify").arg(unit));
    let all = text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify {}:\n{all}",
        unit.display()
    );
    assert!(
        !all.contains("Unknown") && !all.contains("ignoring"),
        "systemd-analyze verify {} complained:\n{all}",
        unit.display()
    );
}

fn latest(mirror: &Path) -> String {
    fs::read_to_string(mirror.join("latest"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn release_writes_a_signed_mirror_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "mirror");
    let mirror = mirror_with(dir.path(), &key);
    let version = latest(&mirror);
    assert!(version.starts_with("v0."), "latest = {version:?}");
    let vdir = mirror.join(&version);
    let sums = fs::read_to_string(vdir.join("SHA256SUMS")).unwrap();
    assert!(sums.ends_with("  rampart-linux-amd64\n"), "{sums:?}");
    // The signature verifies with the public key and the binary is byte-identical.
    let out = run(Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(&public)
        .arg("-in")
        .arg(vdir.join("SHA256SUMS"))
        .arg("-sigfile")
        .arg(vdir.join("SHA256SUMS.sig")));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        fs::read(vdir.join("rampart-linux-amd64")).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_rampart")).unwrap()
    );

    // Not an Ed25519 key; a version that would escape the mirror; missing arguments.
    let rsa = dir.path().join("rsa.pem");
    let out = run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "rsa",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
        ])
        .arg(&rsa));
    assert!(out.status.success(), "{}", text(&out));
    let other = dir.path().join("other");
    let out = release(&other, &rsa, None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not an Ed25519 private key"),
        "{}",
        text(&out)
    );
    let out = release(&other, &key, Some("v1/../../x"));
    assert!(!out.status.success());
    assert!(!other.join("latest").exists());
    let out = run(Command::new("sh")
        .arg(repo().join("tools/release.sh"))
        .arg("--binary"));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--binary requires a value"),
        "{}",
        text(&out)
    );
}

#[test]
fn install_verifies_then_installs_server_and_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "mirror");
    let mirror = mirror_with(dir.path(), &key);
    let t = Target::new(dir.path(), "node");

    let out = t.install(&mirror, Some(&public), &[]);
    let all = text(&out);
    assert!(out.status.success(), "install.sh: {all}");
    assert!(all.contains("signature and checksum verified"), "{all}");
    assert!(
        all.contains("WARNING: verifying with INSTALL_RAMPART_PUBLIC_KEY"),
        "{all}"
    );

    let bin = t.bin.join("rampart");
    assert_eq!(mode(&bin), 0o755);
    let v = run(Command::new(&bin).arg("version"));
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with("rampart "));
    for script in ["rampart-killall.sh", "rampart-uninstall.sh"] {
        let p = t.bin.join(script);
        assert_eq!(mode(&p), 0o755, "{script}");
        let out = run(Command::new("sh").arg("-n").arg(&p));
        assert!(
            out.status.success(),
            "{script} is not valid sh: {}",
            text(&out)
        );
    }
    let unit_path = t.systemd.join("rampart.service");
    let unit = fs::read_to_string(&unit_path).unwrap();
    for line in [
        "KillMode=process",
        "Delegate=yes",
        "LimitNOFILE=1048576",
        "ProtectHome=true",
        &format!(
            "ExecStart={} server --data-dir {}/server",
            bin.display(),
            t.data.display()
        ),
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line:?}:\n{unit}"
        );
    }
    assert_eq!(mode(&t.systemd.join("rampart.service.env")), 0o600);
    verify_unit(&unit_path);

    // Extra flags reach the unit; re-running with a newer release replaces the binary in place.
    let out = release(&mirror, &key, Some("v0.99.1"));
    assert!(out.status.success(), "{}", text(&out));
    let old_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&bin).unwrap());
    let out = t.install(
        &mirror,
        Some(&public),
        &[(
            "INSTALL_RAMPART_EXEC",
            "--https-port 7443 --tls-san node.example",
        )],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("rampart v0.99.1"), "{all}");
    let new_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&bin).unwrap());
    assert_ne!(
        old_inode, new_inode,
        "the binary is replaced by rename, not rewritten"
    );
    let unit = fs::read_to_string(&unit_path).unwrap();
    assert!(
        unit.contains("server --data-dir")
            && unit.contains("--https-port 7443 --tls-san node.example"),
        "{unit}"
    );
    verify_unit(&unit_path);

    // An explicit version that the mirror does not have is refused.
    let out = t.install(
        &mirror,
        Some(&public),
        &[("INSTALL_RAMPART_VERSION", "v9.9.9")],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("cannot download"), "{}", text(&out));
}

#[test]
fn install_agent_keeps_the_token_out_of_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "mirror");
    let mirror = mirror_with(dir.path(), &key);
    let t = Target::new(dir.path(), "agent");
    let token = "R10abc::t0k3n.s3cr3tvalue";
    let out = t.install(
        &mirror,
        Some(&public),
        &[
            ("RAMPART_URL", "https://10.0.0.1:6443"),
            ("RAMPART_TOKEN", token),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("s3cr3tvalue"), "the token was printed");
    assert!(!t.systemd.join("rampart.service").exists());
    let unit_path = t.systemd.join("rampart-agent.service");
    let unit = fs::read_to_string(&unit_path).unwrap();
    assert!(unit.contains(" agent --data-dir "), "{unit}");
    assert!(
        !unit.contains("s3cr3tvalue"),
        "token in the world-readable unit:\n{unit}"
    );
    let env_file = t.systemd.join("rampart-agent.service.env");
    assert_eq!(mode(&env_file), 0o600);
    let env = fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains("RAMPART_SERVER=https://10.0.0.1:6443\n"),
        "{env}"
    );
    assert!(env.contains(&format!("RAMPART_TOKEN={token}\n")), "{env}");
    verify_unit(&unit_path);

    // Half of agent mode, or a plain-HTTP server URL, is refused before anything is written.
    for (name, extra) in [
        ("url-only", vec![("RAMPART_URL", "https://10.0.0.1:6443")]),
        ("token-only", vec![("RAMPART_TOKEN", token)]),
        (
            "http-url",
            vec![
                ("RAMPART_URL", "http://10.0.0.1:6443"),
                ("RAMPART_TOKEN", token),
            ],
        ),
    ] {
        let t = Target::new(dir.path(), name);
        let out = t.install(&mirror, Some(&public), &extra);
        assert!(!out.status.success(), "{name}: {}", text(&out));
        t.assert_nothing_installed(name);
    }
}

#[test]
fn tampered_downloads_and_wrong_keys_install_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "mirror");
    let (_, stranger_public) = keypair(dir.path(), "stranger");
    let mirror = mirror_with(dir.path(), &key);
    let version = latest(&mirror);

    // Copies of the good mirror, each broken one way.
    let broken = |name: &str, f: &dyn Fn(&Path)| -> PathBuf {
        let m = dir.path().join(format!("mirror-{name}"));
        let out = run(Command::new("cp").arg("-a").arg(&mirror).arg(&m));
        assert!(out.status.success());
        f(&m.join(&version));
        m
    };
    let flip_byte = |path: &Path, at: usize| {
        let mut bytes = fs::read(path).unwrap();
        let at = at.min(bytes.len() - 1);
        bytes[at] ^= 0x01;
        fs::write(path, bytes).unwrap();
    };
    let tampered_binary = broken("binary", &|v| {
        flip_byte(&v.join("rampart-linux-amd64"), 4096)
    });
    let tampered_sums = broken("sums", &|v| {
        // The attacker swaps the binary and updates the checksum to match: only the signature
        // can catch it.
        flip_byte(&v.join("rampart-linux-amd64"), 4096);
        let out = run(Command::new("sha256sum").arg(v.join("rampart-linux-amd64")));
        let hash = String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        fs::write(
            v.join("SHA256SUMS"),
            format!("{hash}  rampart-linux-amd64\n"),
        )
        .unwrap();
    });
    let truncated_sig = broken("sig", &|v| {
        let sig = fs::read(v.join("SHA256SUMS.sig")).unwrap();
        fs::write(v.join("SHA256SUMS.sig"), &sig[..sig.len() / 2]).unwrap();
    });
    let no_entry = broken("entry", &|v| {
        // A correctly signed SHA256SUMS that names another file.
        fs::write(v.join("SHA256SUMS"), "00  rampart-linux-arm64\n").unwrap();
        let out = run(Command::new("openssl")
            .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
            .arg(&key)
            .arg("-in")
            .arg(v.join("SHA256SUMS"))
            .arg("-out")
            .arg(v.join("SHA256SUMS.sig")));
        assert!(out.status.success());
    });
    let escaping_latest = dir.path().join("mirror-latest");
    let out = run(Command::new("cp")
        .arg("-a")
        .arg(&mirror)
        .arg(&escaping_latest));
    assert!(out.status.success());
    fs::write(escaping_latest.join("latest"), "../../etc\n").unwrap();

    let cases: Vec<(&str, &Path, Option<&Path>, &str)> = vec![
        (
            "tampered binary",
            &tampered_binary,
            Some(&public),
            "checksum MISMATCH",
        ),
        (
            "tampered SHA256SUMS",
            &tampered_sums,
            Some(&public),
            "signature check FAILED",
        ),
        (
            "truncated signature",
            &truncated_sig,
            Some(&public),
            "signature check FAILED",
        ),
        (
            "no entry for the binary",
            &no_entry,
            Some(&public),
            "no entry for rampart-linux-amd64",
        ),
        (
            "pinned release key, mirror's own signature",
            &mirror,
            None,
            "signature check FAILED",
        ),
        (
            "a stranger's key",
            &mirror,
            Some(&stranger_public),
            "signature check FAILED",
        ),
        (
            "a latest file that escapes",
            &escaping_latest,
            Some(&public),
            "invalid version",
        ),
    ];
    for (i, (name, m, k, message)) in cases.into_iter().enumerate() {
        let t = Target::new(dir.path(), &format!("case{i}"));
        let out = t.install(m, k, &[]);
        let all = text(&out);
        assert!(!out.status.success(), "{name}: installed anyway:\n{all}");
        assert!(
            all.contains(message),
            "{name}: expected {message:?} in:\n{all}"
        );
        assert!(
            all.contains("nothing installed") || message == "invalid version",
            "{name}:\n{all}"
        );
        t.assert_nothing_installed(name);
    }

    // An existing installation is left exactly as it was by a refused upgrade.
    let t = Target::new(dir.path(), "existing");
    let out = t.install(&mirror, Some(&public), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let before = fs::read(t.bin.join("rampart")).unwrap();
    let out = t.install(&tampered_binary, Some(&public), &[]);
    assert!(!out.status.success());
    assert_eq!(fs::read(t.bin.join("rampart")).unwrap(), before);
    let leftovers: Vec<_> = fs::read_dir(&t.bin)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        3,
        "only rampart and its two scripts: {leftovers:?}"
    );
}

#[test]
fn uninstall_stops_rampart_and_leaves_nothing_behind() {
    if !is_root() {
        let required = std::env::var("RAMPART_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "RAMPART_REQUIRE_PRIVILEGED=1 but not running as root"
        );
        eprintln!(
            "SKIP uninstall_stops_rampart_and_leaves_nothing_behind: needs root (unshare, umount)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "mirror");
    let mirror = mirror_with(dir.path(), &key);
    let t = Target::new(dir.path(), "node");
    let out = t.install(&mirror, Some(&public), &[]);
    assert!(out.status.success(), "{}", text(&out));

    // The installed binary runs a real server (control plane only) from the install's data dir.
    let server_dir = t.data.join("server");
    let mut server = Command::new(t.bin.join("rampart"))
        .args([
            "server",
            "--disable-agent",
            "--bind-address",
            "127.0.0.1",
            "--https-port",
        ])
        .arg(free_port().to_string())
        .arg("--data-dir")
        .arg(&server_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = server.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server_dir.join("admin.kubeconfig").exists() {
        assert!(
            Instant::now() < deadline,
            "server never wrote its kubeconfig"
        );
        assert!(server.try_wait().unwrap().is_none(), "server exited early");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Run uninstall in private mount and network namespaces with /run, /var/log and the cgroup
    // tree masked by tmpfs: its node-wide cleanup then cannot touch this machine's other
    // tests, while everything it must remove lives in the temp dir.
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs none /run && mount -t tmpfs none /var/log && \
         mount -t tmpfs none /sys/fs/cgroup && exec sh {}",
        t.bin.join("rampart-uninstall.sh").display()
    );
    let out = run(Command::new("unshare").args(["--mount", "--net", "sh", "-c", &script]));
    let all = text(&out);
    assert!(out.status.success(), "uninstall: {all}");
    assert!(all.contains("rampart: uninstalled"), "{all}");

    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        if server.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the server survived uninstall");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.wait();
    assert!(!t.bin.join("rampart").exists());
    assert!(!t.bin.join("rampart-killall.sh").exists());
    assert!(!t.bin.join("rampart-uninstall.sh").exists());
    assert!(!t.systemd.join("rampart.service").exists());
    assert!(!t.systemd.join("rampart.service.env").exists());
    assert!(!t.data.exists(), "data dir left behind");
    assert!(!t.config.exists(), "config dir left behind");
}
