//! A real OCI registry for tests: Debian's `docker-registry` on loopback with a temporary
//! config (optionally htpasswd auth and TLS), images pushed into it with `skopeo` from OCI
//! archives built by `super::oci_archive`. Killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{host_arch, oci_archive, sha256, write};

/// The tools the registry needs, each with its Debian package.
pub const TOOLS: [(&str, &str); 2] = [
    ("/usr/bin/docker-registry", "docker-registry"),
    ("/usr/bin/skopeo", "skopeo"),
];

/// `None` when the registry tools are installed, else the first one missing. With
/// `RAMPART_REQUIRE_PRIVILEGED=1` a missing tool is a failure, not a skip.
pub fn missing_tool() -> Option<String> {
    let (path, pkg) = TOOLS.iter().find(|(p, _)| !Path::new(p).exists())?;
    let why = format!("needs {path} (Debian: {pkg})");
    if std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("RAMPART_REQUIRE_PRIVILEGED=1 but this test {why}");
    }
    Some(why)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `docker-registry` process on loopback (killed on drop).
pub struct Registry {
    pub port: u16,
    child: Child,
    creds: Option<(&'static str, &'static str)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start(
        dir: &Path,
        name: &str,
        htpasswd: Option<&Path>,
        tls: Option<(&Path, &Path)>,
        creds: Option<(&'static str, &'static str)>,
    ) -> Registry {
        let port = free_port();
        let root = dir.join(format!("{name}-data"));
        std::fs::create_dir_all(&root).unwrap();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        );
        if let Some((crt, key)) = tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                crt.display(),
                key.display()
            ));
        }
        if let Some(h) = htpasswd {
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                h.display()
            ));
        }
        let cfg_path = dir.join(format!("{name}.yml"));
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry {name} did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { port, child, creds }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Push an OCI archive of `layers` as `repo:tag`; returns the manifest digest.
    pub fn push(&self, dir: &Path, repo: &str, tag: &str, layers: &[Vec<u8>]) -> String {
        self.push_arch(dir, repo, tag, layers, host_arch())
    }

    pub fn push_arch(
        &self,
        dir: &Path,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
        arch: &str,
    ) -> String {
        let archive = write(
            dir,
            &format!("{}-{}-{tag}.tar", self.port, repo.replace('/', "_")),
            &oci_archive(&format!("{repo}:{tag}"), layers, arch),
        );
        let dest = format!("docker://{}/{repo}:{tag}", self.host());
        let mut copy = Command::new("/usr/bin/skopeo");
        copy.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
        let mut inspect = Command::new("/usr/bin/skopeo");
        inspect.args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
        ]);
        if let Some((u, p)) = self.creds {
            copy.arg(format!("--dest-creds={u}:{p}"));
            inspect.arg(format!("--creds={u}:{p}"));
        }
        run(copy
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(&dest));
        let raw = run(inspect.arg(&dest));
        sha256(raw.as_bytes())
    }
}
