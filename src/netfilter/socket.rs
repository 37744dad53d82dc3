//! The `NETLINK_NETFILTER` socket: sends a [`Batch`] as one write and collects one ACK (or
//! error) per message; answers a cheap "does this table exist" question.
//!
//! Blocking by design: the kernel processes a whole batch inside `sendmsg` and queues every
//! answer before it returns, so callers run this on a blocking thread
//! (`tokio::task::spawn_blocking`), never on an async worker.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::attr::{self, Buf};
use super::batch::{NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, NLM_F_ACK, NLM_F_REQUEST};
use super::{Batch, Error, Family};

const NETLINK_NETFILTER: i32 = 12;
const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// How long the kernel may take to answer one transaction (a cold start of thousands of
/// Services is one large batch: generous, but bounded).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Room for one queued ACK in the receive buffer (an skb of a small message).
const ACK_TRUESIZE: usize = 1024;

/// What a get of one table tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableInfo {
    /// The kernel's handle: it changes when the table is deleted and created again.
    pub handle: u64,
}

/// A netfilter netlink socket in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Socket {
    pub fn open() -> Result<Socket, Error> {
        // SAFETY: plain socket(2); the returned descriptor is owned at once.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        })?;
        // SAFETY: `fd` was just returned by socket(2) and is not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let s = Socket { fd };
        // Errors then carry only the header of the refused message, not its whole body.
        s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        // SAFETY: a zeroed sockaddr_nl (pid 0: the kernel assigns one) of the right size.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `sa` is a valid sockaddr_nl for the duration of the call.
        check(unsafe {
            libc::bind(
                s.fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        })?;
        Ok(s)
    }

    fn setsockopt(&self, level: i32, name: i32, value: i32) -> io::Result<()> {
        // SAFETY: `value` is a live c_int and its size is passed.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &value as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as u32,
            )
        })
        .map(|_| ())
    }

    /// Size the socket buffers for a message of `send` bytes and `acks` answers (root can
    /// force sizes beyond the sysctl limits; if that is refused the defaults stay).
    fn size_buffers(&self, send: usize, acks: usize) {
        let want_snd = i32::try_from(send + 64 * 1024).unwrap_or(i32::MAX);
        let want_rcv = i32::try_from((acks + 16) * ACK_TRUESIZE).unwrap_or(i32::MAX);
        if self
            .setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want_snd)
            .is_err()
        {
            let _ = self.setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, want_snd);
        }
        if self
            .setsockopt(
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                want_rcv.max(256 * 1024),
            )
            .is_err()
        {
            let _ = self.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, want_rcv);
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `bytes` and `sa` outlive the call; lengths are theirs.
        let n = check(unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) as libc::c_int
        })?;
        if n as usize != bytes.len() {
            return Err(io::Error::other("short netlink write"));
        }
        Ok(())
    }

    /// Receive one datagram (several netlink messages) into `buf`, waiting at most until
    /// `deadline`. `Ok(0)` means the deadline passed.
    fn recv(&self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(e);
            }
            return Ok(n as usize);
        }
    }

    /// Apply `batch` as one transaction. Returns when every message is acknowledged; on a
    /// refusal, the first refused message (lowest sequence number) is reported and nothing of
    /// the batch is in effect.
    pub fn apply(&self, batch: &mut Batch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let expected = batch.len();
        let bytes = batch.finish().to_vec();
        self.size_buffers(bytes.len(), expected);
        self.send(&bytes)?;
        let mut acked = 0usize;
        let mut first_err: Option<(u32, i32)> = None;
        let mut buf = vec![0u8; 256 * 1024];
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while acked < expected {
            // After a refusal the rest of the answers are already queued: drain briefly.
            let until = if first_err.is_some() {
                deadline.min(Instant::now() + Duration::from_millis(200))
            } else {
                deadline
            };
            let n = self.recv(&mut buf, until)?;
            if n == 0 {
                break;
            }
            for (ty, seq, payload) in messages(&buf[..n]) {
                if ty != NLMSG_ERROR {
                    continue;
                }
                let Some(code) = payload.get(..4) else {
                    return Err(Error::Malformed("short error message"));
                };
                let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                if seq == batch.begin_seq && errno != 0 {
                    return Err(Error::Batch { errno });
                }
                if batch.describe(seq).is_none() {
                    continue; // an answer to some earlier request
                }
                acked += 1;
                if errno != 0 && first_err.is_none_or(|(s, _)| seq < s) {
                    first_err = Some((seq, errno));
                }
            }
        }
        if let Some((seq, errno)) = first_err {
            return Err(Error::Rejected {
                seq,
                what: batch.describe(seq).unwrap_or("?").to_string(),
                errno,
            });
        }
        if acked < expected {
            return Err(Error::MissingAcks {
                missing: expected - acked,
            });
        }
        Ok(())
    }

    /// Get one table (not a dump of anything): `None` if it does not exist.
    pub fn get_table(&self, family: Family, name: &str) -> Result<Option<TableInfo>, Error> {
        let mut a = Buf::new();
        a.put_str(1, name);
        let seq = rand_seq();
        let mut msg = Vec::with_capacity(64);
        let len = 16 + 4 + a.bytes.len();
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&((10u16 << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[family as u8, 0, 0, 0]);
        msg.extend_from_slice(&a.bytes);
        self.send(&msg)?;
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = None;
        loop {
            let n = self.recv(&mut buf, deadline)?;
            if n == 0 {
                return Err(Error::MissingAcks { missing: 1 });
            }
            for (ty, s, payload) in messages(&buf[..n]) {
                if s != seq {
                    continue;
                }
                if ty == (10u16 << 8) | NFT_MSG_NEWTABLE {
                    let attrs = payload.get(4..).unwrap_or(&[]);
                    for (t, v) in attr::parse(attrs) {
                        if t == 4 && v.len() == 8 {
                            let mut h = [0u8; 8];
                            h.copy_from_slice(v);
                            found = Some(TableInfo {
                                handle: u64::from_be_bytes(h),
                            });
                        }
                    }
                } else if ty == NLMSG_ERROR {
                    let Some(code) = payload.get(..4) else {
                        return Err(Error::Malformed("short error message"));
                    };
                    let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                    return match errno {
                        0 => Ok(found),
                        libc::ENOENT => Ok(None),
                        e => Err(Error::Io(io::Error::from_raw_os_error(e))),
                    };
                } else if ty == NLMSG_DONE {
                    return Ok(found);
                }
            }
        }
    }
}

/// Sequence numbers of single requests: a range apart from batches' (those count up from 1).
fn rand_seq() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0x8000_0000);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Split a datagram into netlink messages: (type, seq, payload after the header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let payload = &rest[16..len];
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        Some((ty, seq, payload))
    })
}
