//! The connection layer's limits: how long a peer may take to finish its TLS handshake, its
//! first request's headers and the gap between requests, how many connections one address
//! may hold before anyone on them has authenticated, and how the accept loop backs off when
//! the process runs out of file descriptors.
//!
//! What it copies: kube-apiserver's `http.Server` (`ReadHeaderTimeout` 32 s, `IdleTimeout`
//! 90 s for HTTP/1 and HTTP/2) and Go's accept loop (back-off from 5 ms doubling to 1 s on
//! a temporary accept error instead of spinning). The TLS handshake deadline (10 s) is Go's
//! `http.Transport.TLSHandshakeTimeout`, applied on the server side.
//!
//! Invariants:
//! - A connection with no request in flight is closed once it has been quiet for the header
//!   timeout (before its first request) or the idle timeout (after one), whatever the
//!   protocol: it holds nothing of ours that a peer could pin by sending nothing, half a
//!   header (HTTP/1) or frames that never make a request (HTTP/2). Requests in flight,
//!   including watches that stream for hours, keep their connection.
//! - A peer address holds at most `max_unauthenticated_per_ip` connections that finished
//!   their handshake without a valid client certificate and have not yet made an
//!   authenticated request, and four times as many still in their handshake (bounded in time
//!   by the handshake timeout). Beyond that new connections are closed at once;
//!   connections with a trusted client certificate never count, so an attacker sharing the
//!   admin's address cannot lock the admin out with idle or anonymous connections.
//! - Repeated warnings (accept errors, refused peers) are logged at most once per
//!   [`LOG_EVERY`], with the number suppressed in between.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use super::body::Body;

/// How often a repeated warning may be logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Connections one address may have in their handshake, per unauthenticated one allowed.
const HANDSHAKES_PER_UNAUTHENTICATED: usize = 4;
/// Accept back-off bounds, as Go's `net/http`.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Timeouts and caps of the connection layer. Defaults are upstream's.
#[derive(Debug, Clone)]
pub struct Limits {
    /// From accept to a finished TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// From the start of a connection to its first request's headers (HTTP/1: also from the
    /// end of one request to the next one's headers, hyper's `header_read_timeout`).
    pub header_read_timeout: Duration,
    /// How long a connection may sit without a request in flight after its first one.
    pub idle_timeout: Duration,
    /// Connections per peer address that have not authenticated (yet); four times as many
    /// may be in their handshake.
    pub max_unauthenticated_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(90),
            max_unauthenticated_per_ip: 64,
        }
    }
}

/// A warning logged at most once per [`LOG_EVERY`].
#[derive(Default)]
pub struct RateLimitedLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    /// `Some(suppressed since the last time)` when this occurrence may be logged.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.0 {
            Some(t) if t.elapsed() < LOG_EVERY => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(Instant::now()), 0);
                Some(suppressed)
            }
        }
    }
}

/// The accept loop's back-off: nothing after a success, then 5 ms doubling to 1 s per
/// consecutive failure (EMFILE and friends resolve only when connections close).
#[derive(Default)]
pub struct Backoff {
    delay: Option<Duration>,
}

impl Backoff {
    pub fn success(&mut self) {
        self.delay = None;
    }

    pub fn failure(&mut self) -> Duration {
        let next = match self.delay {
            None => BACKOFF_MIN,
            Some(d) => (d * 2).min(BACKOFF_MAX),
        };
        self.delay = Some(next);
        next
    }
}

/// Raise the soft limit on open files to the hard limit, as Go's runtime does for
/// kube-apiserver: the default soft limit (often 1024) is what let idle connections lock the
/// admin out. Returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        // Raising the soft limit up to the hard limit needs no privilege.
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// Which count a connection is held in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Handshake,
    Unauthenticated,
}

/// Per-address counts of connections in their handshake and of unauthenticated ones.
pub struct PeerCounts {
    max: usize,
    counts: Mutex<HashMap<(IpAddr, Phase), usize>>,
    pub refused_log: RateLimitedLog,
}

impl PeerCounts {
    pub fn new(max: usize) -> Arc<PeerCounts> {
        Arc::new(PeerCounts {
            max,
            counts: Mutex::new(HashMap::new()),
            refused_log: RateLimitedLog::default(),
        })
    }

    /// A place for one more connection from `ip` in `phase`, or `None` at the cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, phase: Phase) -> Option<Slot> {
        // Handshakes are brief and a burst of honest clients (a restart behind one NAT
        // address) may be in them together: they get a wider cap.
        let max = match phase {
            Phase::Handshake => self.max.saturating_mul(HANDSHAKES_PER_UNAUTHENTICATED),
            Phase::Unauthenticated => self.max,
        };
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry((ip, phase)).or_insert(0);
        if *n >= max {
            if *n == 0 {
                counts.remove(&(ip, phase));
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.clone(),
            key: (ip, phase),
            held: AtomicBool::new(true),
        })
    }

    /// How many connections `ip` holds in `phase`.
    #[cfg(test)]
    pub fn count(&self, ip: IpAddr, phase: Phase) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&(ip, phase)).copied().unwrap_or(0)
    }

    fn release(&self, key: (IpAddr, Phase)) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Entries exist only for addresses holding connections: the map stays as
                // small as the set of open connections.
                counts.remove(&key);
            }
        }
    }
}

/// One counted connection; released when dropped or explicitly (once).
pub struct Slot {
    counts: Arc<PeerCounts>,
    key: (IpAddr, Phase),
    held: AtomicBool,
}

impl Slot {
    pub fn release(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.counts.release(self.key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether a connection is busy: requests in flight (until their response body is done) and
/// when it last changed.
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request began or ended.
    last_ms: AtomicU64,
    served: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn stamp(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// A request started; the guard ends it (attach it to the response body).
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        self.stamp();
        Busy {
            activity: self.clone(),
        }
    }

    /// When this connection becomes closable if nothing happens before: `None` while a
    /// request is in flight.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let quiet = if self.served.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        Some(self.started + last + quiet)
    }

    /// Resolves when a request begins or ends (to recompute the deadline).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A request in flight on its connection.
pub struct Busy {
    activity: Arc<Activity>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.stamp();
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.activity.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight until the body is done
/// (a watch streams long after its handler returned).
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body` with `busy` held until it is finished or dropped.
pub fn track(body: Body, busy: Busy) -> Body {
    Tracked {
        inner: body,
        _busy: busy,
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| b.failure()).collect();
        assert_eq!(delays[0], Duration::from_millis(5));
        assert_eq!(delays[1], Duration::from_millis(10));
        assert_eq!(delays[9], Duration::from_secs(1));
        b.success();
        assert_eq!(b.failure(), Duration::from_millis(5));
    }

    #[test]
    fn peer_counts_cap_and_release() {
        let counts = PeerCounts::new(2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = counts.admit(ip, Phase::Unauthenticated).unwrap();
        let b = counts.admit(ip, Phase::Unauthenticated).unwrap();
        assert!(counts.admit(ip, Phase::Unauthenticated).is_none());
        assert!(
            counts.admit(ip, Phase::Handshake).is_some(),
            "separate counts"
        );
        assert!(counts
            .admit([10, 0, 0, 2].into(), Phase::Unauthenticated)
            .is_some());
        a.release();
        a.release();
        assert_eq!(counts.count(ip, Phase::Unauthenticated), 1);
        drop(a);
        drop(b);
        assert_eq!(counts.count(ip, Phase::Unauthenticated), 0);
        assert!(
            counts.counts.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }

    #[test]
    fn rate_limited_log_suppresses_repeats() {
        let log = RateLimitedLog::default();
        assert_eq!(log.allow(), Some(0));
        for _ in 0..100 {
            assert_eq!(log.allow(), None);
        }
    }

    #[test]
    fn activity_deadline_follows_requests() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let a = Activity::new();
        let first = a.deadline(&limits).unwrap();
        assert!(first <= Instant::now() + Duration::from_secs(2));
        let busy = a.begin();
        assert_eq!(
            a.deadline(&limits),
            None,
            "a request in flight keeps it open"
        );
        drop(busy);
        let later = a.deadline(&limits).unwrap();
        assert!(later > Instant::now() + Duration::from_secs(4));
    }
}
