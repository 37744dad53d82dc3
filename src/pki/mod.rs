//! The cluster PKI: a root CA, one signing CA per kind of certificate (server, client,
//! kubelet serving), a service-account signing key, and the leaf identities of the control
//! plane — created on first start under `DATA_DIR/pki/`, renewed automatically at 2/3 of their
//! life, rotated on demand. The trust model and the file layout are in `pki/README.md`; the
//! certificate profiles are data in `pki/profiles.yaml`.
//!
//! Invariants: private keys are ECDSA P-256, created on the host that uses them and written
//! 0600 (the directory 0700); a file is never half-written (temporary name, fsync, rename);
//! a CA found in the directory before first start is used instead of generating one (bring
//! your own CA).

mod authority;
pub mod csr;
mod files;
pub mod inventory;
mod issue;
pub mod kubeconfig;
pub mod pem;
pub mod profiles;

use std::net::IpAddr;
use std::path::PathBuf;

pub use authority::{Authority, Config, Leaf, Material};
pub use files::{ensure_private_dir, write_atomic};
pub use issue::{pem_blocks, ServingNames};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid PEM {what}: {detail}")]
    BadPem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{path} has a private key readable by others (mode {mode:o}); expected 0600")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Profiles(String),
    #[error("only one of {0} and {1} exists: a CA needs both its certificate and its key")]
    HalfPair(PathBuf, PathBuf),
    #[error("unknown service {0:?} (see `rampart cert check` for the names)")]
    UnknownService(String),
    #[error("unknown signer {0:?}")]
    UnknownSigner(String),
    #[error("a CA rotation is already in progress; finish it first")]
    RotationInProgress,
    #[error("no CA rotation is in progress")]
    NoRotation,
}

/// A client certificate (with its chain) and its key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    // Private keys never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(..)")
    }
}

/// Every IP address of this host's interfaces (for serving-certificate SANs).
pub fn local_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    ips
}

/// The address a node advertises by default: the first IPv4 address of an interface that is
/// not a loopback device and not one Rampart made itself (`rampart*` bridges, VIP and VXLAN
/// devices, pod `veth*` ends) — a VIP such as the cluster DNS address put on `lo` must never
/// become the node's InternalIP. Loopback when there is none.
pub fn host_ipv4() -> IpAddr {
    use nix::net::if_::InterfaceFlags;
    let ours = |name: &str| name.starts_with("rampart") || name.starts_with("veth");
    nix::ifaddrs::getifaddrs()
        .ok()
        .into_iter()
        .flatten()
        .filter(|a| !a.flags.contains(InterfaceFlags::IFF_LOOPBACK) && !ours(&a.interface_name))
        .filter_map(|a| a.address?.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())))
        .find(|ip| !ip.is_loopback())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// This host's name, if it has a usable one.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}
