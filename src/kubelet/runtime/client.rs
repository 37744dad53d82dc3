//! The agent's side of the shim: start a pod's shim from a sealed copy of our own binary,
//! and talk to it over its socket (async, bounded by timeouts).
//!
//! CVE-2019-5736: a container process that could reach the executable of a runtime
//! process could overwrite the host binary. The shim is therefore never executed from
//! `/proc/self/exe`: the binary is copied once into a `memfd` that is then sealed against
//! any write, grow or shrink, and every shim is executed from that descriptor.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::shim::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare the sealed runtime binary: {0}")]
    Exe(std::io::Error),
    #[error("cannot start the pod shim: {0}")]
    Spawn(String),
    #[error("pod shim at {path}: {detail}")]
    Talk { path: PathBuf, detail: String },
    #[error("pod shim: {0}")]
    Refused(String),
}

static SEALED: OnceLock<Result<OwnedFd, String>> = OnceLock::new();

/// `/proc/self/fd/N` of the sealed copy of this binary (made on first use).
fn sealed_exe() -> Result<String, Error> {
    let r = SEALED.get_or_init(|| seal().map_err(|e| e.to_string()));
    match r {
        Ok(fd) => Ok(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        Err(e) => Err(Error::Exe(std::io::Error::other(e.clone()))),
    }
}

fn seal() -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(
        "rampart-runtime",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut src = std::fs::File::open("/proc/self/exe")?;
    let mut dst = std::fs::File::from(fd);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut dst, &buf[..n])?;
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl(2) F_ADD_SEALS on a memfd we own.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dst))
}

/// Start the shim for a pod in `dir`; returns once its socket listens.
pub async fn spawn(dir: &Path, hostname: &str, host_network: bool) -> Result<(), Error> {
    let exe = sealed_exe()?;
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("__shim")
        .arg("--dir")
        .arg(dir)
        .arg("--hostname")
        .arg(hostname)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(false);
    if host_network {
        cmd.arg("--host-network");
    }
    // argv[0] names what it is in `ps`.
    cmd.arg0("rampart-shim");
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| Error::Spawn("timed out".into()))?
        .map_err(|e| Error::Spawn(e.to_string()))?;
    if !out.status.success() {
        return Err(Error::Spawn(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// One request/response exchange.
pub async fn call(dir: &Path, req: &Request) -> Result<Response, Error> {
    let path = super::shim::socket(dir);
    let talk = |detail: String| Error::Talk {
        path: path.clone(),
        detail,
    };
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|e| talk(e.to_string()))?;
        let mut body = serde_json::to_vec(req).map_err(|e| talk(e.to_string()))?;
        body.push(b'\n');
        s.write_all(&body).await.map_err(|e| talk(e.to_string()))?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .await
            .map_err(|e| talk(e.to_string()))?;
        serde_json::from_str::<Response>(&line).map_err(|e| talk(format!("bad answer: {e}")))
    };
    let resp = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| talk("timed out".into()))??;
    if let Some(e) = &resp.error {
        return Err(Error::Refused(e.clone()));
    }
    Ok(resp)
}

/// Whether a shim answers in `dir`.
pub async fn alive(dir: &Path) -> bool {
    call(dir, &Request::State).await.is_ok()
}

/// One exchange from a blocking thread (log followers), bounded by a 5 s timeout.
pub fn call_blocking(dir: &Path, req: &Request) -> Result<Response, Error> {
    use std::io::{BufRead, Write};
    let path = super::shim::socket(dir);
    let talk = |detail: String| Error::Talk {
        path: path.clone(),
        detail,
    };
    let s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| talk(e.to_string()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut body = serde_json::to_vec(req).map_err(|e| talk(e.to_string()))?;
    body.push(b'\n');
    (&s).write_all(&body).map_err(|e| talk(e.to_string()))?;
    let mut line = String::new();
    std::io::BufReader::new(&s)
        .take(4 << 20)
        .read_line(&mut line)
        .map_err(|e| talk(e.to_string()))?;
    let resp: Response =
        serde_json::from_str(&line).map_err(|e| talk(format!("bad answer: {e}")))?;
    if let Some(e) = &resp.error {
        return Err(Error::Refused(e.clone()));
    }
    Ok(resp)
}

/// Send `req` (blocking) and read the one-line answer with the descriptors that came with it
/// (`SCM_RIGHTS`); also returns the connection and any bytes that followed the line.
fn call_with_fds(
    dir: &Path,
    req: &Request,
) -> Result<
    (
        Response,
        Vec<OwnedFd>,
        std::os::unix::net::UnixStream,
        Vec<u8>,
    ),
    Error,
> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let path = super::shim::socket(dir);
    let talk = |detail: String| Error::Talk {
        path: path.clone(),
        detail,
    };
    let s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| talk(e.to_string()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut body = serde_json::to_vec(req).map_err(|e| talk(e.to_string()))?;
    body.push(b'\n');
    (&s).write_all(&body).map_err(|e| talk(e.to_string()))?;
    let mut got: Vec<u8> = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let line_end = loop {
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 3]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<nix::sys::socket::UnixAddr>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| talk(e.to_string()))?;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(raws) = c {
                    for r in raws {
                        // SAFETY: descriptors just received with SCM_RIGHTS belong to us alone.
                        fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                    }
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            return Err(talk("the shim closed the connection".into()));
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.iter().position(|b| *b == b'\n') {
            break i;
        }
        if got.len() > 4 << 20 {
            return Err(talk("answer too long".into()));
        }
    };
    let rest = got.split_off(line_end + 1);
    let line = String::from_utf8_lossy(&got).to_string();
    let resp: Response =
        serde_json::from_str(line.trim()).map_err(|e| talk(format!("bad answer: {e}")))?;
    if let Some(e) = resp.error {
        return Err(Error::Refused(e));
    }
    Ok((resp, fds, s, rest))
}

/// Start a process in container `id` (blocking: run it on a blocking thread). Returns its
/// PID and its descriptors (see `exec::Started`).
pub fn exec_start(
    dir: &Path,
    id: &str,
    process: &super::exec::Process,
) -> Result<(i32, Vec<OwnedFd>), Error> {
    let req = Request::Exec {
        id: id.to_string(),
        process: process.clone(),
    };
    let (resp, fds, _, _) = call_with_fds(dir, &req)?;
    let pid = resp.exec.map(|e| e.pid).ok_or_else(|| Error::Talk {
        path: super::shim::socket(dir),
        detail: "no exec in the answer".into(),
    })?;
    Ok((pid, fds))
}

/// An attach session to a container (see the shim's module docs).
pub struct Attach {
    /// The container's stdin (pipe write end or pty master), when asked and kept.
    pub stdin: Option<OwnedFd>,
    /// The output records arrive here (blocking mode; the caller converts it).
    pub output: std::os::unix::net::UnixStream,
    /// Output bytes that came with the answer.
    pub pending: Vec<u8>,
}

/// Attach to container `id` (blocking: run it on a blocking thread).
pub fn attach(dir: &Path, id: &str, stdin: bool) -> Result<Attach, Error> {
    let req = Request::Attach {
        id: id.to_string(),
        stdin,
    };
    let (_, fds, output, pending) = call_with_fds(dir, &req)?;
    let _ = output.set_read_timeout(None);
    Ok(Attach {
        stdin: fds.into_iter().next(),
        output,
        pending,
    })
}

/// Wait (as long as it runs) for exec process `pid` to exit; its exit code.
pub async fn exec_wait(dir: &Path, pid: i32) -> Result<i32, Error> {
    let path = super::shim::socket(dir);
    let talk = |detail: String| Error::Talk {
        path: path.clone(),
        detail,
    };
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| talk(e.to_string()))?;
    let mut body =
        serde_json::to_vec(&Request::ExecWait { pid }).map_err(|e| talk(e.to_string()))?;
    body.push(b'\n');
    s.write_all(&body).await.map_err(|e| talk(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .await
        .map_err(|e| talk(e.to_string()))?;
    let resp: Response =
        serde_json::from_str(&line).map_err(|e| talk(format!("bad answer: {e}")))?;
    if let Some(e) = resp.error {
        return Err(Error::Refused(e));
    }
    resp.exec
        .and_then(|e| e.exit_code)
        .ok_or_else(|| talk("no exit code in the answer".into()))
}

/// A descriptor the agent writes to (an attached container's stdin: a pipe or a pty master),
/// made non-blocking and registered with the tokio reactor (call it inside the runtime).
pub fn async_writer(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`: it stays open, on the same file
    // description, and is its raw descriptor until the `AsyncFd` is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::WRITABLE) }
        .map_err(|e| e.into_parts().1)
}
