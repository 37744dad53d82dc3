//! The UDP and TCP listeners (RFC 1035 §4.2, RFC 7766) and the per-query decision: answer
//! from the cluster index, from the forwarding cache, or by asking the node's resolvers.
//!
//! Invariants: a cluster answer is computed synchronously on the receiving task (no await,
//! no allocation beyond the reply); forwarded queries run in their own tasks, at most
//! [`MAX_FORWARDS`] at once (more get SERVFAIL at once, as CoreDNS's `max_concurrent`); TCP
//! connections are bounded in number and closed after [`TCP_IDLE`] without a query.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use super::forward::{self, Cache};
use super::wire::{self, ParseError, Query};
use super::zone::{Index, Lookup};

/// CoreDNS `forward`'s default `max_concurrent`.
pub const MAX_FORWARDS: usize = 1000;
pub const MAX_TCP_CONNECTIONS: usize = 512;
/// RFC 7766 §6.2.3 suggests seconds; CoreDNS uses 10 s.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Shared state of one DNS server.
pub struct Resolver {
    index: RwLock<Arc<Index>>,
    synced: AtomicBool,
    upstreams: Vec<SocketAddr>,
    pub cache: Cache,
    forwards: Arc<Semaphore>,
    /// Queries forwarded to an upstream (not answered from the cache).
    pub forwarded: AtomicU64,
}

/// What to do with one packet.
pub enum Handled {
    Reply(Vec<u8>),
    Forward(Query),
    Drop,
}

impl Resolver {
    pub fn new(index: Index, upstreams: Vec<SocketAddr>) -> Resolver {
        Resolver {
            index: RwLock::new(Arc::new(index)),
            synced: AtomicBool::new(false),
            upstreams,
            cache: Cache::default(),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            forwarded: AtomicU64::new(0),
        }
    }

    /// Publish a new index (after the watches changed something).
    pub fn publish(&self, index: Index, synced: bool) {
        if let Ok(mut ix) = self.index.write() {
            *ix = Arc::new(index);
        }
        if synced {
            self.synced.store(true, Ordering::Release);
        }
    }

    fn index(&self) -> Option<Arc<Index>> {
        self.index.read().ok().map(|ix| ix.clone())
    }

    /// Everything that can be done without waiting: parse, cluster lookup, cache.
    /// `udp`: the reply must fit the client's UDP size (else TC); over TCP up to 64 KiB.
    pub fn handle(&self, packet: &[u8], udp: bool) -> Handled {
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(ParseError::Drop) => return Handled::Drop,
            Err(ParseError::Reply { id, rcode, opcode }) => {
                return Handled::Reply(wire::error_header(id, opcode, rcode))
            }
        };
        let limit = if udp {
            q.udp_limit()
        } else {
            u16::MAX as usize
        };
        if q.qclass != wire::CLASS_IN && q.qclass != wire::TYPE_ANY {
            return Handled::Reply(wire::error_reply(&q, wire::RCODE_NOTIMP));
        }
        let Some(index) = self.index() else {
            return Handled::Reply(wire::error_reply(&q, wire::RCODE_SERVFAIL));
        };
        match index.lookup(&q.name, q.qtype, self.synced.load(Ordering::Acquire)) {
            Lookup::Answer(a) => Handled::Reply(wire::encode(&q, &a, limit)),
            Lookup::Forward => match self.cache.get(&q) {
                Some(p) if p.len() <= limit => Handled::Reply(p),
                Some(_) => Handled::Reply(wire::truncated(&q, wire::RCODE_NOERROR, false)),
                None => Handled::Forward(q),
            },
        }
    }

    /// Ask the node's resolvers; the reply for the client (SERVFAIL when none answers).
    pub async fn forward(&self, q: &Query, packet: &[u8], tcp: bool, limit: usize) -> Vec<u8> {
        if self.upstreams.is_empty() {
            return wire::error_reply(q, wire::RCODE_SERVFAIL);
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        match forward::exchange(&self.upstreams, q, packet, tcp).await {
            Some(resp) => {
                self.cache.put(q, &resp);
                if resp.len() > limit {
                    let rcode = resp.get(3).map_or(0, |b| b & 0xF);
                    wire::truncated(q, rcode, false)
                } else {
                    resp
                }
            }
            None => wire::error_reply(q, wire::RCODE_SERVFAIL),
        }
    }
}

/// Serve UDP on `sock` (run several of these on one socket to use several cores).
pub async fn serve_udp(resolver: Arc<Resolver>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                tracing::debug!(error = %e, "DNS UDP receive failed");
                continue;
            }
        };
        let packet = &buf[..n];
        match resolver.handle(packet, true) {
            Handled::Reply(r) => {
                let _ = sock.send_to(&r, peer).await;
            }
            Handled::Drop => {}
            Handled::Forward(q) => {
                let Ok(permit) = resolver.forwards.clone().try_acquire_owned() else {
                    let _ = sock
                        .send_to(&wire::error_reply(&q, wire::RCODE_SERVFAIL), peer)
                        .await;
                    continue;
                };
                let (resolver, sock, packet) = (resolver.clone(), sock.clone(), packet.to_vec());
                tokio::spawn(async move {
                    let reply = resolver.forward(&q, &packet, false, q.udp_limit()).await;
                    let _ = sock.send_to(&reply, peer).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Serve DNS over TCP (length-prefixed messages, several per connection).
pub async fn serve_tcp(resolver: Arc<Resolver>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: close at once rather than queue (the client retries or uses UDP).
            continue;
        };
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let _ = connection(resolver, stream).await;
            drop(slot);
        });
    }
}

async fn connection(
    resolver: Arc<Resolver>,
    mut stream: tokio::net::TcpStream,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            _ => return Ok(()),
        };
        let mut packet = vec![0u8; len];
        if tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .is_err()
        {
            return Ok(());
        }
        let reply = match resolver.handle(&packet, false) {
            Handled::Reply(r) => r,
            Handled::Drop => return Ok(()),
            Handled::Forward(q) => {
                let Ok(_permit) = resolver.forwards.clone().try_acquire_owned() else {
                    write_msg(&mut stream, &wire::error_reply(&q, wire::RCODE_SERVFAIL)).await?;
                    continue;
                };
                resolver.forward(&q, &packet, true, u16::MAX as usize).await
            }
        };
        write_msg(&mut stream, &reply).await?;
    }
}

async fn write_msg(stream: &mut tokio::net::TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len().min(u16::MAX as usize) as u16).to_be_bytes());
    framed.extend_from_slice(&msg[..msg.len().min(u16::MAX as usize)]);
    stream.write_all(&framed).await
}
