//! nftables over netlink, encoded by us: the shared writer behind the service proxy, pod
//! masquerade, hostPort DNAT and NetworkPolicy. No `nft`, `iptables` or libnftnl is
//! ever involved: messages are built byte by byte as the kernel's `nf_tables` netlink API
//! (`include/uapi/linux/netfilter/nf_tables.h`) defines them and sent on a
//! `NETLINK_NETFILTER` socket.
//!
//! Why not `netlink-packet-netfilter`: its nftables part types tables, chains, rules, sets and
//! elements, but none of the expressions a service proxy needs (payload, cmp, meta, ct, nat,
//! numgen, lookup, dynset, reject, masquerade) nor anonymous sets; those would have been
//! encoded here anyway, and the attribute layer that remains is a few dozen lines
//! ([`attr`]). Encoding it ourselves keeps one small, dependency-free module whose bytes are
//! checked against the kernel by a root test in a fresh network namespace.
//!
//! Invariants:
//! - One [`Batch`] is exactly one netlink transaction (`NFNL_MSG_BATCH_BEGIN` … `BATCH_END`):
//!   the kernel commits all of it or none of it. Every message inside carries `NLM_F_ACK`, so
//!   [`Socket::apply`] knows the fate of each one and reports the kernel's errors with the
//!   sequence number and a description of the message that failed.
//! - Users never flush or list a whole table on an incremental change: they keep what they
//!   applied and send only the difference; a cheap [`Socket::get_table`] (one non-dump
//!   request) tells whether the table is still there (someone may have deleted it).
//! - Numbers in attributes are big-endian, as the kernel expects (`nla_get_be32`); register
//!   contents (keys, data) are raw bytes in network order except where the kernel writes host
//!   order (numgen, fib results, marks), which [`expr`] documents per expression.

pub mod applier;
pub mod attr;
pub mod batch;
pub mod diff;
pub mod expr;
pub mod interval;
pub mod ruleset;
// Raw netlink sockets: `nix` has no NETLINK_NETFILTER batch interface; every block says why.
#[allow(unsafe_code)]
pub mod socket;

pub use batch::{Batch, ChainHook, Family, SetSpec, Verdict};
pub use expr::{CmpOp, Expr, Reg};
pub use socket::{Socket, TableInfo};

pub use applier::Applier;
pub use diff::SyncStats;
pub use ruleset::{Parts, Ruleset};

/// Errors of the nftables writer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused one message of a batch; the whole transaction was aborted.
    #[error("nftables rejected message {seq} ({what}): {}", std::io::Error::from_raw_os_error(*errno))]
    Rejected { seq: u32, what: String, errno: i32 },
    /// The kernel refused the batch as a whole (for example out of memory).
    #[error("nftables refused the transaction: {}", std::io::Error::from_raw_os_error(*errno))]
    Batch { errno: i32 },
    #[error("no answer from the kernel for {missing} message(s) of the transaction")]
    MissingAcks { missing: usize },
    #[error("malformed netlink answer: {0}")]
    Malformed(&'static str),
}

impl Error {
    /// The errno behind a kernel refusal, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Rejected { errno, .. } | Error::Batch { errno } => Some(*errno),
            Error::Io(e) => e.raw_os_error(),
            _ => None,
        }
    }
}
