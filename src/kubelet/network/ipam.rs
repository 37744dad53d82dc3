//! Host-local IPAM for the pods of this node, as the CNI `host-local` plugin k3s uses: one
//! file per allocated address, `DIR/<ip>`, holding the owning pod's UID, plus
//! `DIR/last_reserved_ip` so addresses are handed out round-robin (a just-released address
//! is not reused at once, which keeps stale conntrack entries and caches from hitting the
//! next pod).
//!
//! Invariants: an address is claimed by creating its file with `O_CREAT|O_EXCL`, so two
//! concurrent starts (threads or processes) can never get the same one; a pod asking again
//! gets the address it already holds (restart of the agent, retried sync); the network
//! address, the gateway (first address, the bridge's) and the broadcast address are never
//! handed out. The state lives under the agent's data dir and survives agent restarts.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::cidr::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no free address left in the pod range {0}")]
    Exhausted(Ipv4Net),
    #[error("pod IPAM state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The allocations of one node range, kept in `dir`.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Net,
}

const LAST: &str = "last_reserved_ip";

impl Ipam {
    /// State for `range` in `dir` (created 0700 if missing).
    pub fn open(dir: &Path, range: Ipv4Net) -> Result<Ipam, Error> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Ipam {
            dir: dir.to_path_buf(),
            range,
        })
    }

    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    /// Every allocation: (address, owner UID).
    pub fn allocations(&self) -> Vec<(Ipv4Addr, String)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(ip) = name.parse::<Ipv4Addr>() else {
                continue;
            };
            if let Ok(owner) = std::fs::read_to_string(e.path()) {
                out.push((ip, owner.trim().to_string()));
            }
        }
        out.sort();
        out
    }

    /// The address `owner` holds, if any.
    pub fn lookup(&self, owner: &str) -> Option<Ipv4Addr> {
        self.allocations()
            .into_iter()
            .find(|(_, o)| o == owner)
            .map(|(ip, _)| ip)
    }

    /// The address of `owner`: the one it holds, else the next free one after the last
    /// handed out.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, Error> {
        if let Some(ip) = self.lookup(owner) {
            return Ok(ip);
        }
        let size = self.range.size();
        if size < 4 {
            return Err(Error::Exhausted(self.range));
        }
        // Host offsets 2..size-2: 0 network, 1 gateway, size-1 broadcast.
        let first = 2u64;
        let last = size - 2;
        let count = last - first + 1;
        let after = std::fs::read_to_string(self.dir.join(LAST))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .filter(|ip| self.range.contains(*ip))
            .map(|ip| u64::from(u32::from(ip) - u32::from(self.range.addr())))
            .filter(|off| (first..=last).contains(off))
            .unwrap_or(last);
        for i in 1..=count {
            let off = first + (after - first + i) % count;
            let Some(ip) = self.range.nth(off as u32) else {
                continue;
            };
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|source| Error::Io {
                            path: path.clone(),
                            source,
                        })?;
                    let _ = std::fs::write(self.dir.join(LAST), ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::Io { path, source }),
            }
        }
        Err(Error::Exhausted(self.range))
    }

    /// Give back every address `owner` holds; returns them.
    pub fn release(&self, owner: &str) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        for (ip, o) in self.allocations() {
            if o == owner && std::fs::remove_file(self.dir.join(ip.to_string())).is_ok() {
                out.push(ip);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_round_robin_reuses_and_releases() {
        let d = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(d.path(), "10.42.3.0/29".parse().unwrap()).unwrap();
        let a = ipam.allocate("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(ipam.allocate("a").unwrap(), a, "same owner, same address");
        let b = ipam.allocate("b").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 42, 3, 3));
        assert_eq!(ipam.release("a"), vec![a]);
        // Round-robin: the released .2 is not reused before the range wraps.
        let c = ipam.allocate("c").unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 42, 3, 4));
        for o in ["d", "e", "f"] {
            ipam.allocate(o).unwrap();
        }
        // .2 .. .6 are all taken now (network .0, gateway .1, broadcast .7 never).
        assert!(matches!(ipam.allocate("g"), Err(Error::Exhausted(_))));
        let all: Vec<Ipv4Addr> = ipam.allocations().into_iter().map(|(ip, _)| ip).collect();
        assert!(!all.contains(&Ipv4Addr::new(10, 42, 3, 1)));
        assert!(!all.contains(&Ipv4Addr::new(10, 42, 3, 7)));
        // A reopened state (agent restart) knows every owner.
        let again = Ipam::open(d.path(), ipam.range()).unwrap();
        assert_eq!(again.lookup("c"), Some(c));
        assert_eq!(again.lookup("a"), None);
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let d = tempfile::tempdir().unwrap();
        let range: Ipv4Net = "10.42.9.0/26".parse().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let dir = d.path().to_path_buf();
                std::thread::spawn(move || {
                    let ipam = Ipam::open(&dir, range).unwrap();
                    (0..7)
                        .map(|i| ipam.allocate(&format!("pod-{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "an address was handed out twice");
        assert_eq!(n, 56);
    }
}
