//! Forwarding of names outside the cluster to the node's resolvers (`nameserver` lines of the
//! node's `resolv.conf`, as CoreDNS's `forward . /etc/resolv.conf`), with a bounded cache of
//! their answers (CoreDNS's `cache`: positive answers for their smallest TTL, negative ones
//! for the SOA's negative TTL, RFC 2308; both capped).
//!
//! Invariants: the client's packet is relayed as sent (only the ID changes: each upstream
//! exchange uses a fresh random ID and a fresh socket, and a reply is accepted only from the
//! server asked, with that ID and the same question); a cached answer is served with the
//! client's ID and question bytes and its TTLs aged; truncated and SERVFAIL answers are never
//! cached; the cache holds at most [`CACHE_ENTRIES`] answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wire::{self, Query};

pub const CACHE_ENTRIES: usize = 10_000;
const MAX_POSITIVE_TTL: u32 = 3600;
const MAX_NEGATIVE_TTL: u32 = 1800;
/// Per upstream server and attempt.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// `nameserver` addresses from a resolv.conf text (port 53). As an extension for tests,
/// `nameserver IP:PORT` / `[IPv6]:PORT` is accepted too (glibc would ignore such a line).
/// Addresses in `skip` (our own listening addresses: forwarding to ourselves would loop) are
/// left out.
pub fn nameservers(resolv_conf: &str, skip: &[SocketAddr]) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|w| {
            w.parse::<SocketAddr>()
                .ok()
                .or_else(|| w.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
        })
        .filter(|a| {
            !skip.contains(a)
                && !skip.iter().any(|s| {
                    s.ip().is_unspecified() && s.port() == a.port() && a.ip().is_loopback()
                })
        })
        .collect()
}

/// Read the nameservers of `path`; a missing or unreadable file gives none (then every
/// forwarded name is SERVFAIL, as CoreDNS with no upstream).
pub fn read_nameservers(path: &Path, skip: &[SocketAddr]) -> Vec<SocketAddr> {
    match std::fs::read_to_string(path) {
        Ok(text) => nameservers(&text, skip),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the node's resolv.conf; names outside the cluster will not resolve");
            Vec::new()
        }
    }
}

struct Entry {
    packet: Vec<u8>,
    ttl_offsets: Vec<usize>,
    stored: Instant,
    expires: Instant,
}

/// Cache key: name (lowercase), type, class, and whether the client asked with EDNS (the
/// upstream's answer size depends on it).
type Key = (String, u16, u16, bool);

#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<Key, Entry>>,
}

fn key(q: &Query) -> Key {
    (q.name.clone(), q.qtype, q.qclass, q.edns.is_some())
}

impl Cache {
    /// A cached answer to `q`, with `q`'s ID and question and aged TTLs.
    pub fn get(&self, q: &Query) -> Option<Vec<u8>> {
        let now = Instant::now();
        let entries = self.entries.lock().ok()?;
        let e = entries.get(&key(q))?;
        if now >= e.expires {
            return None;
        }
        let aged = now.duration_since(e.stored).as_secs() as u32;
        let mut p = e.packet.clone();
        age(&mut p, &e.ttl_offsets, aged);
        drop(entries);
        p[0..2].copy_from_slice(&q.id.to_be_bytes());
        // Same name, maybe other letter case: the client's own question bytes go back.
        if p.len() >= 12 + q.question.len() {
            p[12..12 + q.question.len()].copy_from_slice(&q.question);
        }
        Some(p)
    }

    /// Remember `response` (already checked to answer `q`) if it may be cached.
    pub fn put(&self, q: &Query, response: &[u8]) {
        let Some(s) = wire::scan_response(response) else {
            return;
        };
        if s.truncated {
            return;
        }
        let ttl = match s.rcode {
            wire::RCODE_NOERROR if s.answers > 0 => {
                s.min_answer_ttl.map(|t| t.min(MAX_POSITIVE_TTL))
            }
            wire::RCODE_NOERROR | wire::RCODE_NXDOMAIN => {
                s.negative_ttl.map(|t| t.min(MAX_NEGATIVE_TTL))
            }
            _ => None,
        };
        let Some(ttl) = ttl.filter(|t| *t > 0) else {
            return;
        };
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CACHE_ENTRIES {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= CACHE_ENTRIES {
                // Still full of live answers: drop an arbitrary tenth rather than grow.
                let victims: Vec<Key> = entries.keys().take(CACHE_ENTRIES / 10).cloned().collect();
                for k in victims {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(
            key(q),
            Entry {
                packet: response.to_vec(),
                ttl_offsets: s.ttl_offsets,
                stored: now,
                expires: now + Duration::from_secs(ttl as u64),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Subtract `aged` seconds from every TTL (at `offsets`, found when the answer was stored).
fn age(p: &mut [u8], offsets: &[usize], aged: u32) {
    if aged == 0 {
        return;
    }
    for &off in offsets {
        if let Some(b) = p.get(off..off + 4) {
            let ttl = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).saturating_sub(aged);
            p[off..off + 4].copy_from_slice(&ttl.to_be_bytes());
        }
    }
}

/// Whether `resp` answers the question `question` sent with `id`.
fn matches(resp: &[u8], id: u16, question: &[u8]) -> bool {
    resp.len() >= 12 + question.len()
        && resp[0..2] == id.to_be_bytes()
        && resp[2] & 0x80 != 0
        && resp[4..6] == [0, 1]
        && resp[12..12 + question.len()].eq_ignore_ascii_case(question)
}

/// Ask the upstream servers in turn (UDP, or TCP when `tcp`); the first well-formed answer
/// wins. The packet's ID is replaced by a random one; the answer carries the client's again.
pub async fn exchange(
    upstreams: &[SocketAddr],
    q: &Query,
    packet: &[u8],
    tcp: bool,
) -> Option<Vec<u8>> {
    for server in upstreams {
        let id: u16 = rand::random();
        let mut out = packet.to_vec();
        out[0..2].copy_from_slice(&id.to_be_bytes());
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            if tcp {
                tcp_exchange(*server, &out, id, &q.question).await
            } else {
                udp_exchange(*server, &out, id, &q.question).await
            }
        })
        .await;
        match result {
            Ok(Ok(mut resp)) => {
                resp[0..2].copy_from_slice(&q.id.to_be_bytes());
                return Some(resp);
            }
            Ok(Err(e)) => tracing::debug!(%server, error = %e, "upstream DNS server failed"),
            Err(_) => tracing::debug!(%server, "upstream DNS server timed out"),
        }
    }
    None
}

async fn udp_exchange(
    server: SocketAddr,
    out: &[u8],
    id: u16,
    question: &[u8],
) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(out).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if matches(&buf[..n], id, question) {
            buf.truncate(n);
            return Ok(buf);
        }
        // Anything else (a late answer, a spoof attempt) is ignored; the timeout bounds this.
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    out: &[u8],
    id: u16,
    question: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(out.len() + 2);
    framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
    framed.extend_from_slice(out);
    s.write_all(&framed).await?;
    let len = s.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    if matches(&buf, id, question) {
        Ok(buf)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "answer does not match the question",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resolv_conf() {
        let own: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let text = "# comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver 127.0.0.1\nnameserver 127.0.0.2:5353\nnameserver garbage\noptions ndots:2\nnameserver ::1\n";
        assert_eq!(
            nameservers(text, &[own]),
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "127.0.0.2:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
