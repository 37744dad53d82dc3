//! `/attach/{ns}/{pod}/{container}?stdin=&stdout=&stderr=&tty=` over WebSocket with the
//! `v5.channel.k8s.io` remotecommand protocol (upstream's `ServeAttach`; `kubectl attach`,
//! `kubectl run -i`): the same channels as `exec` (0 stdin, 1 stdout, 2 stderr, 3 the final
//! status, 4 resize, 255 close-stdin), joined to the container's own stdio, which the pod's
//! shim keeps (`runtime::shim`, `Request::Attach`): its stdin descriptor (a pipe, or the pty
//! master for `tty: true` containers) comes with the shim's answer, its output follows on the
//! same connection. The session ends with `Success` on channel 3 once the container's output
//! ends (it exited); a client that goes away just detaches, the container keeps running.
//! With `stdinOnce` the container reads EOF when the first session that took stdin ends
//! (close-stdin message or detach), as CRI's `stdin_once`; for a `tty: true` container that
//! EOF is a hang-up of its terminal, which the shim does when told (`closeStdin`), so
//! `kubectl run -it --rm --restart=Never` whose input ends lets the shell exit.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{failure, Options};
use super::websocket::{self, Message};
use crate::kubelet::runtime::client as shim;
use crate::kubelet::runtime::shim::Request as ShimRequest;

/// Run one attach session on an upgraded connection.
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
    let message = |ch: u8, data: &[u8]| {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(ch);
        m.extend_from_slice(data);
        websocket::frame(0x2, &m)
    };
    let want_stdin = opts.stdin;
    let (dir, cid) = (shim_dir.clone(), id.clone());
    let attached = tokio::task::spawn_blocking(move || shim::attach(&dir, &cid, want_stdin)).await;
    let attached = match attached {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            let msg = format!("error attaching to container: {e}");
            let status = serde_json::to_vec(&failure(&msg)).unwrap_or_default();
            let _ = out_tx.send(message(3, &status)).await;
            drop(out_tx);
            let _ = writer.await;
            return;
        }
        Err(e) => {
            let status = serde_json::to_vec(&failure(&e.to_string())).unwrap_or_default();
            let _ = out_tx.send(message(3, &status)).await;
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    let stdin = attached.stdin.and_then(|fd| shim::async_writer(fd).ok());
    // The shim hangs a `tty` + `stdinOnce` container's terminal up once this session's stdin
    // is closed (it decides whether that applies; the client may have asked for no tty,
    // as kubectl does when its own input is no terminal).
    let hang_up = stdin.is_some().then(|| HangUp {
        dir: shim_dir,
        id,
        sent: false,
    });
    // Input: stdin, resizes, close-stdin, pings.
    let in_tx = out_tx.clone();
    let tty = opts.tty;
    let input = tokio::spawn(async move {
        let mut stdin = stdin;
        let mut hang_up = hang_up;
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
                    if let Some(f) = &stdin {
                        if write_all(f, rest).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some((4, rest)) if tty => {
                    if let (Some(m), Ok(v)) =
                        (&stdin, serde_json::from_slice::<serde_json::Value>(rest))
                    {
                        let w = v["Width"].as_u64().unwrap_or(80).min(u16::MAX as u64) as u16;
                        let h = v["Height"].as_u64().unwrap_or(24).min(u16::MAX as u64) as u16;
                        let _ =
                            crate::kubelet::runtime::exec::resize(m.get_ref().as_raw_fd(), h, w);
                    }
                }
                Some((255, rest)) if rest.first() == Some(&0) => {
                    // The client closed stdin: with `stdinOnce` this was the container's
                    // last writer, so it reads EOF.
                    stdin = None;
                    if let Some(h) = hang_up.take() {
                        h.send().await;
                    }
                }
                _ => {}
            }
        }
    });
    // Output: `[stream][len u32 BE][bytes]` records from the shim until it ends the session.
    let mut output = match attached
        .output
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(attached.output))
    {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::debug!(error = %e, "attach: cannot use the shim's connection");
            None
        }
    };
    let mut buf = attached.pending;
    let mut chunk = vec![0u8; 32 * 1024];
    'output: while let Some(o) = output.as_mut() {
        while let Some((stream, data)) = record(&mut buf) {
            let wanted = match stream {
                1 => opts.stdout || opts.tty,
                2 => opts.stderr,
                _ => false,
            };
            if wanted && out_tx.send(message(stream, &data)).await.is_err() {
                break 'output;
            }
        }
        match o.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let status = serde_json::json!({"metadata": {}, "status": "Success"});
    let _ = out_tx
        .send(message(3, &serde_json::to_vec(&status).unwrap_or_default()))
        .await;
    input.abort();
    drop(out_tx);
    let _ = writer.await;
}

/// Tells the shim that this session's stdin (a dup of the pty master) is closed; sent when
/// the client closes stdin, else when the session goes (`Drop`: detach, abort). The shim
/// ignores it unless the container is `tty` + `stdinOnce`.
struct HangUp {
    dir: PathBuf,
    id: String,
    sent: bool,
}

impl HangUp {
    fn request(&self) -> ShimRequest {
        ShimRequest::CloseStdin {
            id: self.id.clone(),
        }
    }

    async fn send(mut self) {
        self.sent = true;
        if let Err(e) = shim::call(&self.dir, &self.request()).await {
            tracing::debug!(error = %e, "attach: cannot tell the shim stdin closed");
        }
    }
}

impl Drop for HangUp {
    fn drop(&mut self) {
        if self.sent {
            return;
        }
        let (req, dir) = (self.request(), std::mem::take(&mut self.dir));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = shim::call(&dir, &req).await;
            });
        }
    }
}

/// Takes one whole output record off the front of `buf`.
fn record(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let stream = buf[0];
    let data = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Some((stream, data))
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|f| nix::unistd::write(f.get_ref(), data).map_err(std::io::Error::from))
        {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn records() {
        let mut buf = vec![1, 0, 0, 0, 2, b'h', b'i', 2, 0, 0, 0, 1];
        assert_eq!(super::record(&mut buf), Some((1, b"hi".to_vec())));
        assert_eq!(super::record(&mut buf), None);
        buf.push(b'!');
        assert_eq!(super::record(&mut buf), Some((2, b"!".to_vec())));
        assert!(buf.is_empty());
    }
}
