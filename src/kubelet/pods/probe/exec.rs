//! `exec` probes and `exec` lifecycle hooks: a command run inside the container by its pod's
//! shim (the same path as `kubectl exec`, `runtime::exec`), as CRI's `ExecSync`.
//!
//! Upstream's behaviour copied here:
//! - the probe passes when the command exits 0 and fails otherwise, with the combined
//!   output (stdout, then stderr, at most 10 KiB: `prober/exec`'s `maxReadLength`) as the
//!   failure message of the `Unhealthy` event;
//! - `timeoutSeconds` is honoured (the `ExecProbeTimeout` gate, on since 1.20): a command
//!   still running then is killed and the probe fails with `command "<cmd>" timed out`;
//! - a hook's failure reads `command '<cmd>' exited with <code>: <stderr>` (the CRI client's
//!   `CodeExitError`) and the caller adds the output.
//!
//! Invariant: the exec process never outlives its deadline (SIGKILL through the shim, which
//! only signals processes it started and has not reaped), and its output is read through
//! non-blocking pipes, so a grandchild holding a pipe open ties up no thread.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::kubelet::runtime::client as shim;
use crate::kubelet::runtime::exec::Process;
use crate::kubelet::runtime::shim::Request;

/// Upstream's `maxReadLength` for probe output.
pub const MAX_OUTPUT: usize = 10 * 1024;

/// Which container a command runs in: its pod's shim directory and the container's id.
#[derive(Debug, Clone)]
pub struct ExecIn {
    pub dir: PathBuf,
    pub id: String,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited {
        code: i32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    TimedOut,
}

/// Reads `fd` to its end, keeping at most `cap` bytes (the rest is drained and dropped so
/// the process never blocks on a full pipe).
async fn drain(fd: Option<OwnedFd>, cap: usize) -> Vec<u8> {
    let Some(fd) = fd else {
        return Vec::new();
    };
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Runs `args` in the container; `timeout` bounds the whole run (None: until it exits).
pub async fn run(
    at: &ExecIn,
    args: &[String],
    timeout: Option<Duration>,
) -> Result<Outcome, String> {
    if args.is_empty() {
        return Err("no command to run".into());
    }
    let process = Process {
        args: args.to_vec(),
        tty: false,
        stdin: false,
    };
    let (dir, id) = (at.dir.clone(), at.id.clone());
    let (pid, fds) = tokio::task::spawn_blocking(move || shim::exec_start(&dir, &id, &process))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // Without stdin the descriptors are stdout and stderr (`exec::Started`).
    let mut fds = fds.into_iter();
    let (out, err) = (fds.next(), fds.next());
    let dir = at.dir.clone();
    let whole = async {
        let (stdout, stderr) = tokio::join!(drain(out, MAX_OUTPUT), drain(err, MAX_OUTPUT));
        let code = shim::exec_wait(&dir, pid)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Exited {
            code,
            stdout,
            stderr,
        })
    };
    let Some(limit) = timeout else {
        return whole.await;
    };
    match tokio::time::timeout(limit, whole).await {
        Ok(r) => r,
        Err(_) => {
            let _ = shim::call(
                &at.dir,
                &Request::ExecKill {
                    pid,
                    signal: libc::SIGKILL,
                },
            )
            .await;
            Ok(Outcome::TimedOut)
        }
    }
}

/// An exec probe's verdict: `Ok` on exit 0, else the message upstream puts after
/// "<Kind> probe failed: " (the output, or the timeout).
pub async fn probe(at: &ExecIn, args: &[String], timeout: Duration) -> Result<(), String> {
    match run(at, args, Some(timeout)).await? {
        Outcome::Exited { code: 0, .. } => Ok(()),
        Outcome::Exited { stdout, stderr, .. } => {
            let mut all = stdout;
            all.extend_from_slice(&stderr);
            all.truncate(MAX_OUTPUT);
            Err(String::from_utf8_lossy(&all).into_owned())
        }
        Outcome::TimedOut => Err(format!("command {:?} timed out", args.join(" "))),
    }
}

/// An exec hook bounded by `limit` (the caller's grace period): `Err((error, output))` as
/// upstream's handler formats them.
pub async fn hook(at: &ExecIn, args: &[String], limit: Duration) -> Result<(), (String, String)> {
    match run(at, args, Some(limit)).await {
        Err(e) => Err((e, String::new())),
        Ok(Outcome::Exited { code: 0, .. }) => Ok(()),
        Ok(Outcome::Exited {
            code,
            stdout,
            stderr,
        }) => {
            let err_text = String::from_utf8_lossy(&stderr).into_owned();
            let mut all = stdout;
            all.extend_from_slice(&stderr);
            Err((
                format!(
                    "command '{}' exited with {code}: {err_text}",
                    args.join(" ")
                ),
                String::from_utf8_lossy(&all).into_owned(),
            ))
        }
        Ok(Outcome::TimedOut) => Err((
            format!("command {:?} timed out", args.join(" ")),
            String::new(),
        )),
    }
}
