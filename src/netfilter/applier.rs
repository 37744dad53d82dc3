//! Keeps one nftables table equal to a desired [`Parts`] over one netlink socket: the one
//! applier behind the service proxy (`ip rampart-proxy`) and the NetworkPolicy engine
//! (`ip rampart-netpol`).
//!
//! Invariants: an incremental sync never lists the table and never flushes it; it is one
//! transaction touching only the chains whose rules changed and the elements that changed
//! ([`Applied::diff_parts`]). Before each sync one get of the table (not a dump) checks it is
//! still the one we programmed (same handle); if someone deleted it, or a sync failed, or
//! [`Applier::force_full_resync`] was called (the periodic resync), the next sync is a cold
//! start that recreates it (destroy + create in the first transaction, so there is never a
//! moment without a table). Interval sets (flag `NFT_SET_INTERVAL` in their spec) are
//! created and filled as ranges: each element's key is the range's first key followed by
//! its last.

use super::batch::Element;
use super::diff::{diff, Applied, Op, SyncStats};
use super::interval::{Range, SET_INTERVAL};
use super::ruleset::{Parts, Rule, Ruleset};
use super::{Batch, Error, Family, Socket};

/// Messages per transaction of a cold start (each answer needs ~1 KiB of socket buffer).
const COLD_CHUNK_MESSAGES: usize = 20_000;

/// Keeps table `ip <table>` in the desired state.
#[derive(Debug)]
pub struct Applier {
    table: &'static str,
    /// Field lengths of the table's interval sets (nft's `type a . b . c; flags interval`).
    interval_fields: &'static [u32],
    sock: Socket,
    applied: Option<(u64, Applied)>,
}

fn ranges(elems: &[Element], key_len: usize) -> Vec<Range> {
    elems
        .iter()
        .filter(|(k, _)| k.len() == 2 * key_len)
        .map(|(k, _)| (k[..key_len].to_vec(), k[key_len..].to_vec()))
        .collect()
}

impl Applier {
    /// Open the socket in the calling thread's network namespace.
    pub fn new(table: &'static str, interval_fields: &'static [u32]) -> Result<Applier, Error> {
        Ok(Applier {
            table,
            interval_fields,
            sock: Socket::open()?,
            applied: None,
        })
    }

    /// The next sync starts cold (upstream's periodic full resync).
    pub fn force_full_resync(&mut self) {
        self.applied = None;
    }

    /// Make the table equal a whole ruleset (a table of one part).
    pub fn sync(&mut self, desired: &Ruleset) -> Result<SyncStats, Error> {
        self.sync_parts(&Parts::whole(desired.clone()))
    }

    /// Make the table equal `desired`: a partial sync when the table is the one we last
    /// programmed, else a cold start. On failure nothing is assumed and the next call starts
    /// cold.
    pub fn sync_parts(&mut self, desired: &Parts) -> Result<SyncStats, Error> {
        let current = self.sock.get_table(Family::Ip, self.table)?;
        let applied = match (&self.applied, current) {
            (Some((handle, a)), Some(t)) if *handle == t.handle => Some(a),
            _ => None,
        };
        let (ops, mut st, changed) = match applied {
            Some(a) => a.diff_parts(desired),
            None => {
                let (ops, st) = diff(None, &desired.materialize());
                (ops, st, Vec::new())
            }
        };
        if ops.is_empty() {
            if let Some((_, a)) = self.applied.as_mut() {
                a.commit(desired, &changed);
            }
            return Ok(st);
        }
        let chunk = if st.cold {
            COLD_CHUNK_MESSAGES
        } else {
            usize::MAX
        };
        let intervals: std::collections::HashMap<String, usize> = ops
            .iter()
            .filter_map(|o| match o {
                Op::AddSet(s) if s.flags & SET_INTERVAL != 0 => {
                    Some((s.name.clone(), s.key_len as usize))
                }
                _ => None,
            })
            .chain(interval_sets(desired))
            .collect();
        match self.send(&ops, chunk, &mut st, &intervals) {
            Ok(()) => {
                let handle = self
                    .sock
                    .get_table(Family::Ip, self.table)?
                    .map(|t| t.handle)
                    .unwrap_or(0);
                let state = match self.applied.take() {
                    Some((_, mut a)) if !st.cold => {
                        a.commit(desired, &changed);
                        a
                    }
                    _ => Applied::new(desired.clone()),
                };
                self.applied = Some((handle, state));
                Ok(st)
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }

    fn encode(&self, b: &mut Batch, op: &Op, intervals: &std::collections::HashMap<String, usize>) {
        let t = self.table;
        match op {
            Op::DestroyTable => b.destroy_table(t),
            Op::AddTable => b.add_table(t),
            Op::AddSet(s) if s.flags & SET_INTERVAL != 0 => {
                let mut spec = s.clone();
                spec.flags &= !SET_INTERVAL;
                b.add_interval_set(t, &spec, self.interval_fields)
            }
            Op::AddSet(s) => b.add_set(t, s),
            Op::AddChain(c, h) => b.add_chain(t, c, h.as_ref()),
            Op::DelElements(s, e) => match intervals.get(s) {
                Some(len) => b.del_ranges(t, s, &ranges(e, *len)),
                None => b.del_elements(t, s, e),
            },
            Op::FlushChain(c) => b.flush_chain(t, c),
            Op::AddRule(c, Rule::Plain(exprs)) => b.add_rule(t, c, exprs),
            Op::AddRule(
                c,
                Rule::Vmap {
                    prefix,
                    sreg,
                    key_type,
                    key_len,
                    elems,
                },
            ) => b.add_rule_with_vmap(t, c, prefix, *sreg, *key_type, *key_len, elems),
            Op::AddElements(s, e) => match intervals.get(s) {
                Some(len) => b.add_ranges(t, s, &ranges(e, *len)),
                None => b.add_elements(t, s, e),
            },
            Op::DestroyChain(c) => b.destroy_chain(t, c),
            Op::DestroySet(s) => b.destroy_set(t, s),
        }
    }

    fn send(
        &self,
        ops: &[Op],
        chunk: usize,
        st: &mut SyncStats,
        intervals: &std::collections::HashMap<String, usize>,
    ) -> Result<(), Error> {
        let mut b = Batch::new(Family::Ip);
        for op in ops {
            self.encode(&mut b, op, intervals);
            if b.len() >= chunk {
                st.messages += b.len();
                st.transactions += 1;
                self.sock.apply(&mut b)?;
                b = Batch::new(Family::Ip);
            }
        }
        if !b.is_empty() {
            st.messages += b.len();
            st.transactions += 1;
            self.sock.apply(&mut b)?;
        }
        Ok(())
    }

    /// Remove the table (uninstall, cleanup when the component is disabled).
    pub fn cleanup(&mut self) -> Result<(), Error> {
        let mut b = Batch::new(Family::Ip);
        b.destroy_table(self.table);
        self.applied = None;
        self.sock.apply(&mut b)
    }
}

/// The interval sets of `p` (base and parts), by name, with their key length.
fn interval_sets(p: &Parts) -> impl Iterator<Item = (String, usize)> + '_ {
    std::iter::once(&p.base)
        .chain(p.parts.values())
        .flat_map(|r| r.sets.values())
        .filter(|s| s.spec.flags & SET_INTERVAL != 0)
        .map(|s| (s.spec.name.clone(), s.spec.key_len as usize))
}
