//! `/exec/{ns}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=` over WebSocket with
//! upstream's `v5.channel.k8s.io` remotecommand protocol (what kubectl ≥ 1.30 speaks first):
//! every binary message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error
//! (the final `metav1.Status`), 4 resize (`{"Width":w,"Height":h}`), 255 close (`[255, 0]`:
//! the client closed stdin). The upgrade is answered first and every later failure is
//! reported on channel 3, as upstream does. The process is started by the pod's shim
//! (`runtime::exec`); its descriptors come back over the shim's socket.
//!
//! The final status as upstream encodes it: `Success`, or `Failure` with reason
//! `NonZeroExitCode` and the exit code as the `ExitCode` cause (kubectl exits with it).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::websocket::{self, Message};
use crate::kubelet::runtime::{client as shim, exec::Process};

pub const PROTOCOL: &str = "v5.channel.k8s.io";

/// The validated query of an exec request.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    /// An exec request's query (at least one `command`).
    pub fn parse(query: Option<&str>) -> Result<Options, String> {
        Self::parse_streams(query, true)
    }

    /// An attach request's query (upstream's `PodAttachOptions`: the streams and `tty`).
    pub fn parse_attach(query: Option<&str>) -> Result<Options, String> {
        Self::parse_streams(query, false)
    }

    fn parse_streams(query: Option<&str>, exec: bool) -> Result<Options, String> {
        let mut o = Options {
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let on = matches!(v.as_ref(), "true" | "1");
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "stdin" => o.stdin = on,
                "stdout" => o.stdout = on,
                "stderr" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        if exec && o.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !exec {
            o.command.clear();
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least one of stdin, stdout, stderr".into());
        }
        if o.tty {
            // A terminal merges stderr into stdout (upstream: "tty and stderr cannot both be
            // true", kubectl never asks for both).
            o.stderr = false;
        }
        Ok(o)
    }
}

/// The final status for an exit code, as upstream's `remotecommand` writes it.
pub fn exit_status(command: &[String], code: i32) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

pub(super) fn failure(message: &str) -> serde_json::Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

/// Run one session on an upgraded connection.
pub async fn session<S>(io: S, shim_dir: PathBuf, id: String, opts: Options)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
            let _ = wr.flush().await;
        }
        let _ = websocket::write_close(&mut wr).await;
        let _ = wr.shutdown().await;
    });
    let send = |tx: &mpsc::Sender<Vec<u8>>, ch: u8, data: &[u8]| {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(ch);
        m.extend_from_slice(data);
        let tx = tx.clone();
        let frame = websocket::frame(0x2, &m);
        async move { tx.send(frame).await.is_ok() }
    };
    let process = Process {
        args: opts.command.clone(),
        tty: opts.tty,
        stdin: opts.stdin,
    };
    let dir = shim_dir.clone();
    let started = tokio::task::spawn_blocking(move || shim::exec_start(&dir, &id, &process)).await;
    let (pid, fds) = match started {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let msg = format!("error executing command in container: {e}");
            let _ = send(
                &out_tx,
                3,
                &serde_json::to_vec(&failure(&msg)).unwrap_or_default(),
            )
            .await;
            drop(out_tx);
            let _ = writer.await;
            return;
        }
        Err(e) => {
            let _ = send(
                &out_tx,
                3,
                &serde_json::to_vec(&failure(&e.to_string())).unwrap_or_default(),
            )
            .await;
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    // (stdin writer, output readers with their channel, pty master for resizes)
    let mut fds = fds.into_iter();
    let (stdin_w, outputs, master): (Option<OwnedFd>, Vec<(u8, OwnedFd)>, Option<OwnedFd>) =
        if opts.tty {
            let Some(m) = fds.next() else { return };
            let r = m.try_clone().ok();
            let w = if opts.stdin { m.try_clone().ok() } else { None };
            (w, r.map(|r| vec![(1u8, r)]).unwrap_or_default(), Some(m))
        } else {
            let w = if opts.stdin { fds.next() } else { None };
            let out = fds.next();
            let err = fds.next();
            let mut v = Vec::new();
            if let Some(o) = out {
                v.push((1u8, o));
            }
            if let Some(e) = err {
                v.push((2u8, e));
            }
            (w, v, None)
        };
    // Input: stdin, resizes, close, pings.
    let in_tx = out_tx.clone();
    let master_raw = master.as_ref().map(|m| m.as_raw_fd());
    let input = tokio::spawn(async move {
        let mut stdin = stdin_w.map(|f| tokio::fs::File::from_std(std::fs::File::from(f)));
        let mut pongs = Vec::new();
        loop {
            let msg = match websocket::read_message(&mut rd, &mut pongs).await {
                Ok(m) => m,
                Err(_) => return,
            };
            for p in pongs.drain(..) {
                let _ = in_tx.send(websocket::frame(0xA, &p)).await;
            }
            let data = match msg {
                Message::Binary(d) | Message::Text(d) => d,
                Message::Close => return,
            };
            match data.split_first() {
                Some((0, rest)) => {
                    if let Some(f) = stdin.as_mut() {
                        if f.write_all(rest).await.is_err() || f.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some((4, rest)) => {
                    if let (Some(m), Ok(v)) = (
                        master_raw,
                        serde_json::from_slice::<serde_json::Value>(rest),
                    ) {
                        let w = v["Width"].as_u64().unwrap_or(80).min(u16::MAX as u64) as u16;
                        let h = v["Height"].as_u64().unwrap_or(24).min(u16::MAX as u64) as u16;
                        let _ = crate::kubelet::runtime::exec::resize(m, h, w);
                    }
                }
                Some((255, rest)) if rest.first() == Some(&0) => {
                    // The client closed stdin: EOF for the process.
                    stdin = None;
                }
                _ => {}
            }
        }
    });
    // Output: each stream until EOF (a pty master reports EIO once the process is gone).
    let mut pumps = Vec::new();
    for (ch, fd) in outputs {
        let tx = out_tx.clone();
        let wanted = (ch == 1 && opts.stdout) || (ch == 2 && opts.stderr) || opts.tty;
        pumps.push(tokio::spawn(async move {
            let mut f = tokio::fs::File::from_std(std::fs::File::from(fd));
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match f.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if wanted {
                            let mut m = Vec::with_capacity(n + 1);
                            m.push(ch);
                            m.extend_from_slice(&buf[..n]);
                            if tx.send(websocket::frame(0x2, &m)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }));
    }
    for p in pumps {
        let _ = p.await;
    }
    let status = match shim::exec_wait(&shim_dir, pid).await {
        Ok(code) => exit_status(&opts.command, code),
        Err(e) => failure(&format!("cannot learn the exit code: {e}")),
    };
    drop(master);
    let _ = send(&out_tx, 3, &serde_json::to_vec(&status).unwrap_or_default()).await;
    input.abort();
    drop(out_tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_and_status() {
        let o = super::Options::parse(Some(
            "command=sh&command=-c&command=exit+7&stdout=true&stderr=true",
        ))
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "exit 7"]);
        assert!(super::Options::parse(Some("stdout=true")).is_err());
        assert!(super::Options::parse(Some("command=ls")).is_err());
        let s = super::exit_status(&o.command, 7);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "7");
        assert_eq!(super::exit_status(&o.command, 0)["status"], "Success");
    }
}
