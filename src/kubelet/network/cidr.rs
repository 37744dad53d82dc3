//! IPv4 prefixes as the pod network uses them: the cluster CIDR, a node's `spec.podCIDR`,
//! the first address of a node's range (the bridge's gateway) and the host addresses in it.
//!
//! Invariant: a parsed `Ipv4Net` has its host bits cleared (`10.42.1.7/24` is refused, as
//! upstream's `ParseCIDR`-then-compare validation of `spec.podCIDR` would not accept it).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    base: u32,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IPv4 CIDR like 10.42.0.0/16")]
pub struct CidrError(pub String);

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, CidrError> {
        let bad = || CidrError(format!("{addr}/{prefix}"));
        if prefix > 32 {
            return Err(bad());
        }
        let base = u32::from(addr);
        if base & !mask(prefix) != 0 {
            return Err(bad());
        }
        Ok(Ipv4Net { base, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    /// Whether `other` lies entirely inside this range.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr())
    }

    /// The `n`-th address of the range (0 is the network address), if inside it.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = self.size();
        (u64::from(n) < size).then(|| Ipv4Addr::from(self.base.wrapping_add(n)))
    }

    /// Number of addresses in the range.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The bridge's address: the first host address (`10.42.1.1` of `10.42.1.0/24`), as
    /// k3s's `cni0`.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| Ipv4Addr::from(self.base + 1))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        Ipv4Net::new(ip, prefix).map_err(|_| bad())
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let n: Ipv4Net = "10.42.1.0/24".parse().unwrap();
        assert_eq!(n.gateway(), Some(Ipv4Addr::new(10, 42, 1, 1)));
        assert_eq!(n.size(), 256);
        assert!(n.contains(Ipv4Addr::new(10, 42, 1, 255)));
        assert!(!n.contains(Ipv4Addr::new(10, 42, 2, 0)));
        assert_eq!(n.to_string(), "10.42.1.0/24");
        let cluster: Ipv4Net = "10.42.0.0/16".parse().unwrap();
        assert!(cluster.covers(&n));
        assert!(!n.covers(&cluster));
        for bad in [
            "10.42.1.7/24",
            "10.42.0.0",
            "10.42.0.0/33",
            "x/8",
            "10.42.0.0/-1",
            "",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
        assert_eq!(n.nth(256), None);
        assert_eq!(n.nth(255), Some(Ipv4Addr::new(10, 42, 1, 255)));
    }
}
