//! Interval sets over concatenated keys: nft's `type a . b . c; flags interval`, which the
//! kernel stores in its pipapo backend (`net/netfilter/nft_set_pipapo.c`). One lookup
//! matches a packet against ranges in every field at once (an address range, a protocol, a
//! port range), which is how NetworkPolicy checks `pod . peer . protocol . port` with one
//! lookup whatever the number of policies.
//!
//! Encoding (what `nft` sends for such a set): the set carries `NFT_SET_INTERVAL |
//! NFT_SET_CONCAT` and `NFTA_SET_DESC` → `NFTA_SET_DESC_CONCAT`, the length of each field in
//! bytes (an IPv4 address 4, `inet_proto` 1, `inet_service` 2); the key is laid out as in
//! registers, every field padded to 4 bytes. Each element is a range: `NFTA_SET_ELEM_KEY`
//! holds the first key and `NFTA_SET_ELEM_KEY_END` the last (inclusive), field by field.
//!
//! Invariant the caller keeps: elements never overlap (the kernel refuses an element whose
//! start or end falls inside another one); users compute disjoint ranges before adding.

use super::attr::Buf;
use super::batch::{Batch, SetSpec, SET_CONCAT};
use super::expr::put_value;

/// `NFT_SET_INTERVAL`.
pub const SET_INTERVAL: u32 = 0x4;

const NLM_F_CREATE: u16 = 0x400;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
/// Set ids only need to be unique inside one transaction; this range stays clear of the
/// small ids [`Batch`] hands out itself.
const ID_BASE: u32 = 0x4000_0000;
/// Keep each message's element list well under the u16 limit of a netlink attribute.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

/// One range element: first and last key (same length, the set's key length).
pub type Range = (Vec<u8>, Vec<u8>);

impl Batch {
    /// Create an interval set over a concatenation whose fields are `fields` bytes long
    /// (each padded to 4 in the key); `spec.key_len` must be the padded total.
    pub fn add_interval_set(&mut self, table: &str, spec: &SetSpec, fields: &[u32]) {
        let mut a = Buf::new();
        a.put_str(1, table);
        a.put_str(2, &spec.name);
        a.put_be32(3, spec.flags | SET_INTERVAL | SET_CONCAT);
        a.put_be32(4, spec.key_type);
        a.put_be32(5, spec.key_len);
        let desc = a.begin(NFTA_SET_DESC);
        let concat = a.begin(NFTA_SET_DESC_CONCAT);
        for f in fields {
            let e = a.begin(1); // NFTA_LIST_ELEM
            a.put_be32(NFTA_SET_FIELD_LEN, *f);
            a.end(e);
        }
        a.end(concat);
        a.end(desc);
        a.put_be32(10, ID_BASE + self.len() as u32); // NFTA_SET_ID
        self.msg(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            a,
            format!("add interval set {}", spec.name),
        );
    }

    pub fn add_ranges(&mut self, table: &str, set: &str, ranges: &[Range]) {
        self.ranges(NFT_MSG_NEWSETELEM, table, set, ranges);
    }

    pub fn del_ranges(&mut self, table: &str, set: &str, ranges: &[Range]) {
        self.ranges(NFT_MSG_DELSETELEM, table, set, ranges);
    }

    fn ranges(&mut self, ty: u16, table: &str, set: &str, ranges: &[Range]) {
        let mut rest = ranges;
        while !rest.is_empty() {
            let mut a = Buf::new();
            a.put_str(1, table);
            a.put_str(2, set);
            let list = a.begin(3);
            let mut taken = 0;
            for (first, last) in rest {
                if taken > 0 && a.bytes.len() > ELEMENTS_PER_MESSAGE_BYTES {
                    break;
                }
                let e = a.begin(1);
                put_value(&mut a, NFTA_SET_ELEM_KEY, first);
                put_value(&mut a, NFTA_SET_ELEM_KEY_END, last);
                a.end(e);
                taken += 1;
            }
            a.end(list);
            let (verb, flags) = if ty == NFT_MSG_NEWSETELEM {
                ("add", NLM_F_CREATE)
            } else {
                ("delete", 0)
            };
            self.msg(ty, flags, a, format!("{verb} {taken} range(s) of {set}"));
            rest = &rest[taken..];
        }
    }
}
