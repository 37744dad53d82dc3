//! One nftables transaction: the messages between `BATCH_BEGIN` and `BATCH_END`, each with
//! its own sequence number and a short description kept for error reports.

use std::sync::atomic::{AtomicU32, Ordering};

use super::attr::Buf;
use super::expr::{put_value, put_verdict, Expr};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

pub(crate) const NLM_F_REQUEST: u16 = 1;
pub(crate) const NLM_F_ACK: u16 = 4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;

// nf_tables_msg_types
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_DESTROYTABLE: u16 = 26;
const NFT_MSG_DESTROYCHAIN: u16 = 27;
const NFT_MSG_DESTROYSET: u16 = 29;

/// Set flags (`NFT_SET_*`).
pub const SET_ANONYMOUS: u32 = 0x1;
pub const SET_CONSTANT: u32 = 0x2;
pub const SET_MAP: u32 = 0x8;
pub const SET_TIMEOUT: u32 = 0x10;
pub const SET_EVAL: u32 = 0x20;
pub const SET_CONCAT: u32 = 0x80;

/// `NFT_DATA_VERDICT`: the data type of a verdict map.
pub const DATA_VERDICT: u32 = 0xffff_ff00;

/// nft's data type ids (only used by `nft list` to print keys; the kernel stores them).
pub mod types {
    pub const VERDICT: u32 = 1;
    pub const INTEGER: u32 = 4;
    pub const IPV4_ADDR: u32 = 7;
    pub const IPV6_ADDR: u32 = 8;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;

    /// nft's id of a concatenation: components shifted by 6 bits each.
    pub fn concat(parts: &[u32]) -> u32 {
        parts.iter().fold(0, |acc, p| (acc << 6) | p)
    }
}

/// Address family of a table (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ip = 2,
    Ip6 = 10,
}

/// What a rule or map element decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub(crate) fn code(&self) -> (i32, Option<&str>) {
        match self {
            Verdict::Drop => (0, None),
            Verdict::Accept => (1, None),
            Verdict::Jump(c) => (-3, Some(c)),
            Verdict::Goto(c) => (-4, Some(c)),
            Verdict::Return => (-5, None),
        }
    }
}

/// A base chain's hook: `type <kind> hook <hook> priority <priority>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHook {
    /// "nat" or "filter".
    pub kind: &'static str,
    /// `NF_INET_*`: 0 prerouting, 1 input, 2 forward, 3 output, 4 postrouting.
    pub hook: u32,
    pub priority: i32,
}

/// A named (or anonymous) set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetSpec {
    pub name: String,
    pub flags: u32,
    /// nft's key type id (see [`types`]).
    pub key_type: u32,
    pub key_len: u32,
    /// `Some(DATA_VERDICT)` for a verdict map.
    pub data_type: Option<u32>,
    /// Default element timeout (timeout sets).
    pub timeout_ms: Option<u64>,
}

/// One element: its key and, in a map, its verdict.
pub type Element = (Vec<u8>, Option<Verdict>);

/// Keep each message's element list under the u16 limit of a netlink attribute.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

static NEXT_BATCH: AtomicU32 = AtomicU32::new(0);

/// Batches number their messages consecutively from a base 2^20 apart, cycling below
/// 2^31 (single requests use the upper half), so answers of one batch are never taken for
/// another's.
fn next_begin_seq() -> u32 {
    ((NEXT_BATCH.fetch_add(1, Ordering::Relaxed) % 2048) << 20) | 1
}

/// A transaction being built. [`super::Socket::apply`] sends it as one netlink write.
#[derive(Debug)]
pub struct Batch {
    pub(crate) buf: Vec<u8>,
    /// (seq, description) of every message that expects an ACK.
    pub(crate) messages: Vec<(u32, String)>,
    pub(crate) begin_seq: u32,
    next_anon: u32,
    family: Family,
}

impl Batch {
    pub fn new(family: Family) -> Batch {
        let mut b = Batch {
            buf: Vec::with_capacity(4096),
            messages: Vec::new(),
            begin_seq: 0,
            next_anon: 1,
            family,
        };
        b.begin_seq = next_begin_seq();
        b.header(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            b.begin_seq,
            0,
            &Buf::new(),
        );
        b
    }

    /// Messages that will be acknowledged (everything but begin and end).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    fn header(&mut self, ty: u16, flags: u16, seq: u32, family: u8, attrs: &Buf) {
        let len = 16 + 4 + attrs.bytes.len();
        self.buf
            .extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, res_id (the subsystem, in batch markers), big-endian.
        let res_id = if ty == NFNL_MSG_BATCH_BEGIN || ty == NFNL_MSG_BATCH_END {
            NFNL_SUBSYS_NFTABLES
        } else {
            0
        };
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.buf.extend_from_slice(&attrs.bytes);
    }

    pub(crate) fn msg(&mut self, ty: u16, flags: u16, attrs: Buf, what: String) {
        let seq = self.begin_seq + 1 + self.messages.len() as u32;
        self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            self.family as u8,
            &attrs,
        );
        self.messages.push((seq, what));
    }

    /// Create the table if it does not exist (never touches its contents).
    pub fn add_table(&mut self, table: &str) {
        let mut a = Buf::new();
        a.put_str(1, table);
        self.msg(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            a,
            format!("add table {table}"),
        );
    }

    /// Delete the table and everything in it; no error if it is absent.
    pub fn destroy_table(&mut self, table: &str) {
        let mut a = Buf::new();
        a.put_str(1, table);
        self.msg(NFT_MSG_DESTROYTABLE, 0, a, format!("destroy table {table}"));
    }

    pub fn add_chain(&mut self, table: &str, chain: &str, hook: Option<&ChainHook>) {
        let mut a = Buf::new();
        a.put_str(1, table);
        a.put_str(3, chain);
        if let Some(h) = hook {
            let n = a.begin(4);
            a.put_be32(1, h.hook);
            a.put_be32(2, h.priority as u32);
            a.end(n);
            a.put_be32(5, 1); // policy accept
            a.put_str(7, h.kind);
        }
        self.msg(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            a,
            format!("add chain {chain}"),
        );
    }

    /// Delete every rule of one chain (`flush chain`), the way a changed chain is rewritten.
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        let mut a = Buf::new();
        a.put_str(1, table);
        a.put_str(2, chain);
        self.msg(NFT_MSG_DELRULE, 0, a, format!("flush chain {chain}"));
    }

    /// Delete a chain (its rules go with it); no error if it is absent.
    pub fn destroy_chain(&mut self, table: &str, chain: &str) {
        let mut a = Buf::new();
        a.put_str(1, table);
        a.put_str(3, chain);
        self.msg(NFT_MSG_DESTROYCHAIN, 0, a, format!("delete chain {chain}"));
    }

    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr]) {
        let mut a = Buf::new();
        a.put_str(1, table);
        a.put_str(2, chain);
        let n = a.begin(4);
        for e in exprs {
            e.encode(&mut a);
        }
        a.end(n);
        self.msg(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            a,
            format!("add rule to {chain}"),
        );
    }

    fn set_attrs(&self, table: &str, s: &SetSpec, id: Option<u32>) -> Buf {
        let mut a = Buf::new();
        a.put_str(1, table);
        a.put_str(2, &s.name);
        a.put_be32(3, s.flags);
        a.put_be32(4, s.key_type);
        a.put_be32(5, s.key_len);
        if let Some(dt) = s.data_type {
            a.put_be32(6, dt);
        }
        if let Some(id) = id {
            a.put_be32(10, id);
        }
        if let Some(t) = s.timeout_ms {
            a.put_be64(11, t);
        }
        a
    }

    pub fn add_set(&mut self, table: &str, s: &SetSpec) {
        // The kernel requires an id on every new set (rules of the batch may refer to it).
        let id = self.next_anon;
        self.next_anon += 1;
        let a = self.set_attrs(table, s, Some(id));
        self.msg(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            a,
            format!("add set {}", s.name),
        );
    }

    /// Delete a set; no error if it is absent.
    pub fn destroy_set(&mut self, table: &str, name: &str) {
        let mut a = Buf::new();
        a.put_str(1, table);
        a.put_str(2, name);
        self.msg(NFT_MSG_DESTROYSET, 0, a, format!("delete set {name}"));
    }

    fn elements(
        &mut self,
        ty: u16,
        table: &str,
        set: &str,
        set_id: Option<u32>,
        elems: &[Element],
    ) {
        let verb = if ty == NFT_MSG_NEWSETELEM {
            "add"
        } else {
            "delete"
        };
        let mut rest = elems;
        while !rest.is_empty() {
            let mut a = Buf::new();
            a.put_str(1, table);
            a.put_str(2, set);
            if let Some(id) = set_id {
                a.put_be32(4, id);
            }
            let list = a.begin(3);
            let mut taken = 0;
            for (key, data) in rest {
                if taken > 0 && a.bytes.len() > ELEMENTS_PER_MESSAGE_BYTES {
                    break;
                }
                let e = a.begin(1);
                put_value(&mut a, 1, key);
                if let (Some(v), true) = (data, ty == NFT_MSG_NEWSETELEM) {
                    put_verdict(&mut a, 2, v);
                }
                a.end(e);
                taken += 1;
            }
            a.end(list);
            let what = format!("{verb} {taken} element(s) of {set}");
            let flags = if ty == NFT_MSG_NEWSETELEM {
                NLM_F_CREATE
            } else {
                0
            };
            self.msg(ty, flags, a, what);
            rest = &rest[taken..];
        }
    }

    pub fn add_elements(&mut self, table: &str, set: &str, elems: &[Element]) {
        self.elements(NFT_MSG_NEWSETELEM, table, set, None, elems);
    }

    pub fn del_elements(&mut self, table: &str, set: &str, elems: &[Element]) {
        self.elements(NFT_MSG_DELSETELEM, table, set, None, elems);
    }

    /// Add a rule ending in an anonymous verdict map: `<prefix> <lookup of sreg> vmap { … }`
    /// (how `numgen random mod N vmap { 0 : goto a, 1 : goto b }` is built). The map lives and
    /// dies with the rule.
    #[allow(clippy::too_many_arguments)] // the parts of one nftables rule, named at the call
    pub fn add_rule_with_vmap(
        &mut self,
        table: &str,
        chain: &str,
        prefix: &[Expr],
        sreg: super::Reg,
        key_type: u32,
        key_len: u32,
        elems: &[Element],
    ) {
        let id = self.next_anon;
        self.next_anon += 1;
        let name = "__map%d";
        let spec = SetSpec {
            name: name.into(),
            flags: SET_ANONYMOUS | SET_CONSTANT | SET_MAP,
            key_type,
            key_len,
            data_type: Some(DATA_VERDICT),
            timeout_ms: None,
        };
        let a = self.set_attrs(table, &spec, Some(id));
        self.msg(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            a,
            format!("add map for a rule of {chain}"),
        );
        self.elements(NFT_MSG_NEWSETELEM, table, name, Some(id), elems);
        let mut exprs = prefix.to_vec();
        exprs.push(Expr::Lookup {
            set: name.into(),
            set_id: Some(id),
            sreg,
            dreg: Some(super::Reg::VERDICT),
            invert: false,
        });
        self.add_rule(table, chain, &exprs);
    }

    /// Close the batch: the bytes to write, in one `sendmsg`.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let seq = self.begin_seq + 1 + self.messages.len() as u32;
        self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, &Buf::new());
        &self.buf
    }

    /// The description of the message with sequence number `seq`.
    pub(crate) fn describe(&self, seq: u32) -> Option<&str> {
        let i = seq.checked_sub(self.begin_seq + 1)? as usize;
        self.messages.get(i).map(|(_, w)| w.as_str())
    }
}
