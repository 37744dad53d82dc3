//! nftables expressions (the bytecode of a rule), each encoded as the kernel's `NFTA_EXPR`
//! (`name` + nested `data`). Only what Rampart's rules use is here; every variant is plain
//! data so rules can be compared for diffing.
//!
//! Registers are the kernel's 32-bit registers (`NFT_REG32_00` = 8 …): a concatenated key
//! (address . protocol . port) occupies consecutive registers, each component padded to 4
//! bytes, exactly how set keys are laid out. Byte order: payload and addresses are network
//! order; `meta mark`, `numgen` results and `fib` address types are host order.

use super::attr::Buf;
use super::batch::Verdict;

/// A 32-bit data register (`NFT_REG32_00 + n`), or the verdict register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reg(pub u32);

impl Reg {
    pub const VERDICT: Reg = Reg(0);
    /// The n-th 32-bit data register.
    pub const fn r(n: u32) -> Reg {
        Reg(8 + n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// Payload bases (`NFT_PAYLOAD_*_HEADER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Base {
    Network = 1,
    Transport = 2,
}

/// Meta keys used here (`NFT_META_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    Mark = 3,
    L4Proto = 16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Copy `len` bytes at `offset` of a header into `dreg`.
    Payload {
        base: Base,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    Cmp {
        sreg: Reg,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    MetaGet {
        key: MetaKey,
        dreg: Reg,
    },
    MetaSet {
        key: MetaKey,
        sreg: Reg,
    },
    /// `ct state` (a host-order u32 bit set) into `dreg`.
    CtState {
        dreg: Reg,
    },
    /// Load a constant into a data register.
    Immediate {
        dreg: Reg,
        data: Vec<u8>,
    },
    /// Set the verdict.
    Verdict(Verdict),
    /// Membership (`dreg: None`) or map lookup (`dreg: Some(VERDICT)` for a verdict map).
    /// `set_id` names an anonymous set created in the same batch.
    Lookup {
        set: String,
        set_id: Option<u32>,
        sreg: Reg,
        dreg: Option<Reg>,
        invert: bool,
    },
    /// `numgen random mod modulus` (host-order u32) into `dreg`.
    NumgenRandom {
        modulus: u32,
        dreg: Reg,
    },
    /// Destination NAT to the IPv4/IPv6 address in `addr` and the port in `port`.
    Dnat {
        family: u32,
        addr: Reg,
        port: Option<Reg>,
    },
    /// Masquerade; `fully_random` as upstream's kube-proxy does for its hairpin rule.
    Masquerade {
        fully_random: bool,
    },
    /// `update @set { <key in sreg> }`: add or refresh the key with the set's timeout.
    DynsetUpdate {
        set: String,
        sreg: Reg,
        timeout_ms: u64,
    },
    /// ICMP (port) unreachable, upstream's plain `reject`; for TCP the client sees
    /// ECONNREFUSED at once.
    Reject,
    Counter,
}

// Attribute numbers from nf_tables.h.
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;

/// Write `NFTA_DATA_VALUE` nested in `ty`.
pub(crate) fn put_value(b: &mut Buf, ty: u16, data: &[u8]) {
    let n = b.begin(ty);
    b.put(NFTA_DATA_VALUE, data);
    b.end(n);
}

/// Write a verdict (`NFTA_DATA_VERDICT` with code and chain) nested in `ty`.
pub(crate) fn put_verdict(b: &mut Buf, ty: u16, v: &Verdict) {
    let n = b.begin(ty);
    let vn = b.begin(NFTA_DATA_VERDICT);
    let (code, chain) = v.code();
    b.put_be32(1, code as u32);
    if let Some(c) = chain {
        b.put_str(2, c);
    }
    b.end(vn);
    b.end(n);
}

impl Expr {
    pub fn encode(&self, b: &mut Buf) {
        let (name, _) = self.name_and_kind();
        let e = b.begin(1); // NFTA_LIST_ELEM
        b.put_str(NFTA_EXPR_NAME, name);
        let d = b.begin(NFTA_EXPR_DATA);
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                b.put_be32(1, dreg.0);
                b.put_be32(2, *base as u32);
                b.put_be32(3, *offset);
                b.put_be32(4, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                b.put_be32(1, sreg.0);
                b.put_be32(2, *op as u32);
                put_value(b, 3, data);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                b.put_be32(1, sreg.0);
                b.put_be32(2, dreg.0);
                b.put_be32(3, mask.len() as u32);
                put_value(b, 4, mask);
                put_value(b, 5, xor);
            }
            Expr::MetaGet { key, dreg } => {
                b.put_be32(1, dreg.0);
                b.put_be32(2, *key as u32);
            }
            Expr::MetaSet { key, sreg } => {
                b.put_be32(2, *key as u32);
                b.put_be32(3, sreg.0);
            }
            Expr::CtState { dreg } => {
                b.put_be32(1, dreg.0);
                b.put_be32(2, 0); // NFT_CT_STATE
            }
            Expr::Immediate { dreg, data } => {
                b.put_be32(1, dreg.0);
                put_value(b, 2, data);
            }
            Expr::Verdict(v) => {
                b.put_be32(1, Reg::VERDICT.0);
                put_verdict(b, 2, v);
            }
            Expr::Lookup {
                set,
                set_id,
                sreg,
                dreg,
                invert,
            } => {
                b.put_str(1, set);
                b.put_be32(2, sreg.0);
                if let Some(d) = dreg {
                    b.put_be32(3, d.0);
                }
                if let Some(id) = set_id {
                    b.put_be32(4, *id);
                }
                if *invert {
                    b.put_be32(5, 1); // NFT_LOOKUP_F_INV
                }
            }
            Expr::NumgenRandom { modulus, dreg } => {
                b.put_be32(1, dreg.0);
                b.put_be32(2, *modulus);
                b.put_be32(3, 1); // NFT_NG_RANDOM
            }
            Expr::Dnat { family, addr, port } => {
                b.put_be32(1, 1); // NFT_NAT_DNAT
                b.put_be32(2, *family);
                b.put_be32(3, addr.0); // REG_ADDR_MIN (the kernel sets MAP_IPS)
                if let Some(p) = port {
                    b.put_be32(5, p.0); // REG_PROTO_MIN (the kernel sets PROTO_SPECIFIED)
                }
            }
            Expr::Masquerade { fully_random } => {
                if *fully_random {
                    b.put_be32(1, 0x10); // NF_NAT_RANGE_PROTO_RANDOM_FULLY
                }
            }
            Expr::DynsetUpdate {
                set,
                sreg,
                timeout_ms,
            } => {
                b.put_str(1, set);
                b.put_be32(3, 1); // NFT_DYNSET_OP_UPDATE
                b.put_be32(4, sreg.0);
                b.put_be64(6, *timeout_ms);
            }
            Expr::Reject => {
                b.put_be32(1, 0); // NFT_REJECT_ICMP_UNREACH
                b.put(2, &[3]); // port unreachable
            }
            Expr::Counter => {
                b.put_be64(1, 0);
                b.put_be64(2, 0);
            }
        }
        b.end(d);
        b.end(e);
    }

    fn name_and_kind(&self) -> (&'static str, ()) {
        let n = match self {
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::MetaGet { .. } | Expr::MetaSet { .. } => "meta",
            Expr::CtState { .. } => "ct",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Lookup { .. } => "lookup",
            Expr::NumgenRandom { .. } => "numgen",
            Expr::Dnat { .. } => "nat",
            Expr::Masquerade { .. } => "masq",
            Expr::DynsetUpdate { .. } => "dynset",
            Expr::Reject => "reject",
            Expr::Counter => "counter",
        };
        (n, ())
    }
}

/// Building blocks for IPv4 rules (what `nft` compiles its syntax into).
pub mod ip4 {
    use super::*;
    use std::net::Ipv4Addr;

    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;

    /// `ip saddr` into `reg`.
    pub fn saddr(reg: Reg) -> Expr {
        Expr::Payload {
            base: Base::Network,
            offset: 12,
            len: 4,
            dreg: reg,
        }
    }

    /// `ip daddr` into `reg`.
    pub fn daddr(reg: Reg) -> Expr {
        Expr::Payload {
            base: Base::Network,
            offset: 16,
            len: 4,
            dreg: reg,
        }
    }

    /// `th dport` (TCP, UDP and SCTP share the offset) into `reg`.
    pub fn dport(reg: Reg) -> Expr {
        Expr::Payload {
            base: Base::Transport,
            offset: 2,
            len: 2,
            dreg: reg,
        }
    }

    pub fn l4proto(reg: Reg) -> Expr {
        Expr::MetaGet {
            key: MetaKey::L4Proto,
            dreg: reg,
        }
    }

    /// `ip daddr . meta l4proto . th dport` into three consecutive registers from `r(0)`.
    pub fn daddr_proto_port() -> Vec<Expr> {
        vec![daddr(Reg::r(0)), l4proto(Reg::r(1)), dport(Reg::r(2))]
    }

    /// `meta l4proto . th dport` into `r(0)`, `r(1)`.
    pub fn proto_port() -> Vec<Expr> {
        vec![l4proto(Reg::r(0)), dport(Reg::r(1))]
    }

    /// The 12-byte key of `ip . proto . port`.
    pub fn key_addr_proto_port(ip: Ipv4Addr, proto: u8, port: u16) -> Vec<u8> {
        let mut k = ip.octets().to_vec();
        k.extend_from_slice(&[proto, 0, 0, 0]);
        k.extend_from_slice(&port.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    }

    /// The 8-byte key of `proto . port`.
    pub fn key_proto_port(proto: u8, port: u16) -> Vec<u8> {
        let mut k = vec![proto, 0, 0, 0];
        k.extend_from_slice(&port.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    }

    /// Match a prefix: `<payload> & mask ==/!= net`.
    pub fn prefix(load: Expr, net: Ipv4Addr, len: u8, op: CmpOp) -> Vec<Expr> {
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len.min(32)))
        };
        let reg = match &load {
            Expr::Payload { dreg, .. } => *dreg,
            _ => Reg::r(0),
        };
        let masked = u32::from(net) & mask;
        vec![
            load,
            Expr::Bitwise {
                sreg: reg,
                dreg: reg,
                mask: mask.to_be_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: reg,
                op,
                data: masked.to_be_bytes().to_vec(),
            },
        ]
    }

    /// `meta l4proto <proto>`.
    pub fn proto_is(proto: u8) -> Vec<Expr> {
        vec![
            l4proto(Reg::r(0)),
            Expr::Cmp {
                sreg: Reg::r(0),
                op: CmpOp::Eq,
                data: vec![proto],
            },
        ]
    }

    /// `ct state new`.
    pub fn ct_new() -> Vec<Expr> {
        vec![
            Expr::CtState { dreg: Reg::r(0) },
            Expr::Bitwise {
                sreg: Reg::r(0),
                dreg: Reg::r(0),
                mask: 8u32.to_ne_bytes().to_vec(), // NF_CT_STATE_BIT(IP_CT_NEW)
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: Reg::r(0),
                op: CmpOp::Neq,
                data: vec![0; 4],
            },
        ]
    }

    /// `dnat to ip:port`.
    pub fn dnat(ip: Ipv4Addr, port: u16) -> Vec<Expr> {
        vec![
            Expr::Immediate {
                dreg: Reg::r(0),
                data: ip.octets().to_vec(),
            },
            Expr::Immediate {
                dreg: Reg::r(1),
                data: port.to_be_bytes().to_vec(),
            },
            Expr::Dnat {
                family: 2,
                addr: Reg::r(0),
                port: Some(Reg::r(1)),
            },
        ]
    }

    /// `meta mark set meta mark | bits`.
    pub fn mark_or(bits: u32) -> Vec<Expr> {
        vec![
            Expr::MetaGet {
                key: MetaKey::Mark,
                dreg: Reg::r(0),
            },
            Expr::Bitwise {
                sreg: Reg::r(0),
                dreg: Reg::r(0),
                mask: (!bits).to_ne_bytes().to_vec(),
                xor: bits.to_ne_bytes().to_vec(),
            },
            Expr::MetaSet {
                key: MetaKey::Mark,
                sreg: Reg::r(0),
            },
        ]
    }

    /// `meta mark set meta mark ^ bits` when the bits are known set: clears them.
    pub fn mark_clear(bits: u32) -> Vec<Expr> {
        vec![
            Expr::MetaGet {
                key: MetaKey::Mark,
                dreg: Reg::r(0),
            },
            Expr::Bitwise {
                sreg: Reg::r(0),
                dreg: Reg::r(0),
                mask: (!bits).to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::MetaSet {
                key: MetaKey::Mark,
                sreg: Reg::r(0),
            },
        ]
    }

    /// `meta mark & bits == 0`.
    pub fn mark_unset(bits: u32) -> Vec<Expr> {
        vec![
            Expr::MetaGet {
                key: MetaKey::Mark,
                dreg: Reg::r(0),
            },
            Expr::Bitwise {
                sreg: Reg::r(0),
                dreg: Reg::r(0),
                mask: bits.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: Reg::r(0),
                op: CmpOp::Eq,
                data: vec![0; 4],
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmp_encodes_as_the_kernel_expects() {
        let mut b = Buf::new();
        Expr::Cmp {
            sreg: Reg::r(1),
            op: CmpOp::Eq,
            data: vec![6],
        }
        .encode(&mut b);
        let want: Vec<u8> = vec![
            44, 0, 1, 0x80, // list elem
            8, 0, 1, 0, b'c', b'm', b'p', 0, // name
            32, 0, 2, 0x80, // data
            8, 0, 1, 0, 0, 0, 0, 9, // sreg NFT_REG32_01 = 9
            8, 0, 2, 0, 0, 0, 0, 0, // op EQ
            12, 0, 3, 0x80, 5, 0, 1, 0, 6, 0, 0, 0, // data { value: 06 }
        ];
        assert_eq!(b.bytes, want);
    }

    #[test]
    fn keys_pad_each_component_to_four_bytes() {
        let k = ip4::key_addr_proto_port([10, 43, 0, 1].into(), ip4::TCP, 443);
        assert_eq!(k, vec![10, 43, 0, 1, 6, 0, 0, 0, 1, 187, 0, 0]);
        assert_eq!(
            ip4::key_proto_port(ip4::UDP, 53),
            vec![17, 0, 0, 0, 0, 53, 0, 0]
        );
    }
}
