//! `/portforward/{ns}/{pod}` as kubectl ≥ 1.31 speaks it (`PortForwardWebsockets`, beta and
//! on by default): a WebSocket whose subprotocol is `SPDY/3.1+portforward.k8s.io` tunnels a
//! SPDY/3.1 session (`spdy.rs`) in its binary messages — client-go's tunneling dialer; the
//! upstream apiserver unwraps it and speaks plain SPDY to the kubelet, we serve the tunnel
//! here and the apiserver splices it through (`apiserver/node_proxy/portforward.rs`).
//!
//! The `portforward.k8s.io` protocol (upstream's `kubelet/cri/streaming/portforward/
//! httpstream.go`): for every forwarded connection the client opens two streams carrying
//! the same `requestID` and `port` headers, `streamType: error` and `streamType: data`;
//! both are answered with SYN_REPLY. Once both are there the kubelet dials `port` on the
//! pod's loopback inside its network namespace (`runtime::netns`, as containerd does) and
//! copies bytes both ways over the data stream; a dial failure is written to the error
//! stream (`error forwarding port P to pod ...`). The data stream is finished (FIN) when the
//! pod's side closes, then the error stream, which is what ends the connection in kubectl;
//! the client's FIN shuts the socket's write side.
//!
//! Bounds: at most 128 streams per session (more are refused with RST_STREAM), 16 queued
//! chunks per connection (the session reader waits: TCP-style back-pressure), every task
//! ends with the session.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, Frame};
use super::websocket::{self, Message};
use crate::kubelet::runtime::netns::{self, NetNs};

pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const MAX_STREAMS: usize = 128;
const CHUNK: usize = 32 * 1024;

#[derive(Default)]
struct Pair {
    port: String,
    data: Option<u32>,
    error: Option<u32>,
}

/// Run one port-forward session on an upgraded connection; `pod` names the pod in errors.
pub async fn session<S>(io: S, ns: NetNs, pod: String, uid: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
        let _ = websocket::write_close(&mut wr).await;
        let _ = wr.shutdown().await;
    });
    // SPDY frames go out as WebSocket binary messages, one frame each.
    let spdy_out = {
        let tx = out_tx.clone();
        move |frame: Vec<u8>| {
            let tx = tx.clone();
            async move { tx.send(websocket::frame(0x2, &frame)).await.is_ok() }
        }
    };
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let relay = {
        let out = spdy_out.clone();
        tokio::spawn(async move {
            while let Some(f) = frames_rx.recv().await {
                if !out(f).await {
                    return;
                }
            }
        })
    };
    let mut inflater = spdy::Inflater::default();
    let mut deflater = spdy::Deflater::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut inbound: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut opened = 0usize;
    let mut last_stream = 0u32;
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut pongs = Vec::new();
    'session: loop {
        let msg = match websocket::read_message(&mut rd, &mut pongs).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: bad WebSocket frame");
                break;
            }
        };
        for p in pongs.drain(..) {
            let _ = out_tx.send(websocket::frame(0xA, &p)).await;
        }
        match msg {
            Message::Binary(d) => buf.extend_from_slice(&d),
            Message::Text(_) => continue,
            Message::Close => break,
        }
        loop {
            let frame = match spdy::parse(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward: SPDY protocol error");
                    let _ = frames_tx.send(spdy::goaway(last_stream)).await;
                    break 'session;
                }
            };
            match frame {
                Frame::Control {
                    kind: spdy::SYN_STREAM,
                    body,
                    ..
                } => {
                    let (id, block) = match spdy::syn_stream(&body) {
                        Ok(x) => x,
                        Err(_) => break 'session,
                    };
                    // Every header block advances the shared zlib stream: always inflate.
                    let headers = match inflater.headers(block) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::debug!(error = %e, "port-forward: bad header block");
                            let _ = frames_tx.send(spdy::goaway(last_stream)).await;
                            break 'session;
                        }
                    };
                    last_stream = last_stream.max(id);
                    opened += 1;
                    if opened > MAX_STREAMS {
                        let _ = frames_tx
                            .send(spdy::rst_stream(id, spdy::REFUSED_STREAM))
                            .await;
                        continue;
                    }
                    let get = |k: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    let (kind, port, request) = (get("streamtype"), get("port"), get("requestid"));
                    let _ = frames_tx.send(deflater.syn_reply(id, &[])).await;
                    let p = pairs.entry(request.clone()).or_default();
                    p.port = port;
                    match kind.as_str() {
                        "data" => p.data = Some(id),
                        "error" => p.error = Some(id),
                        _ => {
                            let _ = frames_tx
                                .send(spdy::rst_stream(id, spdy::PROTOCOL_ERROR))
                                .await;
                            continue;
                        }
                    }
                    if let (Some(data), Some(error)) = (p.data, p.error) {
                        let port = p.port.clone();
                        pairs.remove(&request);
                        let (tx, rx) = mpsc::channel(16);
                        inbound.insert(data, tx);
                        tasks.push(tokio::spawn(forward(
                            ns.clone(),
                            port,
                            data,
                            error,
                            rx,
                            frames_tx.clone(),
                            format!("{pod}, uid {uid}"),
                        )));
                    }
                }
                Frame::Control {
                    kind: spdy::PING,
                    body,
                    ..
                } => {
                    let _ = frames_tx.send(spdy::ping(&body)).await;
                }
                Frame::Control {
                    kind: spdy::RST_STREAM,
                    body,
                    ..
                } => {
                    if let Some(id) = spdy::rst_stream_id(&body) {
                        inbound.remove(&id);
                    }
                }
                Frame::Control {
                    kind: spdy::GOAWAY, ..
                } => break 'session,
                // SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do (spdystream keeps no
                // flow-control windows).
                Frame::Control { .. } => {}
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if let Some(tx) = inbound.get(&stream) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            inbound.remove(&stream);
                        }
                    }
                    if flags & spdy::FLAG_FIN != 0 {
                        // EOF from the client: the socket's write side is shut.
                        inbound.remove(&stream);
                    }
                }
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    drop(frames_tx);
    let _ = relay.await;
    drop(out_tx);
    let _ = writer.await;
}

/// One forwarded connection: dial, then copy both ways over the data stream.
async fn forward(
    ns: NetNs,
    port: String,
    data: u32,
    error: u32,
    mut rx: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
    pod: String,
) {
    let fail = |msg: String| {
        let out = out.clone();
        async move {
            let _ = out.send(spdy::data(error, false, msg.as_bytes())).await;
            let _ = out.send(spdy::data(error, true, &[])).await;
            let _ = out.send(spdy::data(data, true, &[])).await;
        }
    };
    let Ok(p) = port.parse::<u16>() else {
        return fail(format!(
            "error forwarding port {port} to pod {pod}: invalid port {port:?}"
        ))
        .await;
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    let sock = match netns::dial_tcp(&ns, addr, Duration::from_secs(10)).await {
        Ok(s) => s,
        Err(e) => {
            return fail(format!(
                "error forwarding port {p} to pod {pod}: failed to connect to localhost:{p} inside the pod's network namespace: dial tcp4 {addr}: {}",
                crate::kubelet::pods::probe::os_error(&e)
            ))
            .await;
        }
    };
    let (mut r, mut w) = sock.into_split();
    let up = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut chunk = vec![0u8; CHUNK];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out
                    .send(spdy::data(data, false, &chunk[..n]))
                    .await
                    .is_err()
                {
                    up.abort();
                    return;
                }
            }
        }
    }
    let _ = out.send(spdy::data(data, true, &[])).await;
    let _ = out.send(spdy::data(error, true, &[])).await;
    // The client finishes its side once it has seen both FINs; `up` ends with its FIN or
    // with the session.
    let _ = up.await;
}
