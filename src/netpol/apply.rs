//! Applies the desired NetworkPolicy table over netlink, the way the service proxy does
//! (`crate::proxy::apply`, whose diff this reuses): one transaction per sync holding only
//! the difference — changed allow ranges and isolated pods, chains only when their rules
//! change — and a cold start (destroy + recreate in the same transaction) when the table is
//! new, unknown or was deleted by someone (checked with one get of the table, never a list).
//!
//! Why elements can change in one transaction without a gap: deletions come before
//! additions, and the kernel applies the whole batch atomically, so a packet sees either
//! the old or the new ranges; established connections are accepted before any lookup.

use super::ruleset::{ALLOW_FIELDS, ALLOW_KEY_LEN, TABLE};
use crate::netfilter::batch::Element;
use crate::netfilter::interval::{Range, SET_INTERVAL};
use crate::netfilter::{Batch, Error, Family, Socket};
use crate::proxy::apply::{diff, Op, SyncStats};
use crate::proxy::ruleset::{Rule, Ruleset};

/// Messages per transaction of a cold start.
const COLD_CHUNK_MESSAGES: usize = 20_000;

fn ranges(elems: &[Element]) -> Vec<Range> {
    elems
        .iter()
        .filter(|(k, _)| k.len() == 2 * ALLOW_KEY_LEN)
        .map(|(k, _)| (k[..ALLOW_KEY_LEN].to_vec(), k[ALLOW_KEY_LEN..].to_vec()))
        .collect()
}

fn encode(b: &mut Batch, op: &Op, interval: &dyn Fn(&str) -> bool) {
    match op {
        Op::DestroyTable => b.destroy_table(TABLE),
        Op::AddTable => b.add_table(TABLE),
        Op::AddSet(s) if s.flags & SET_INTERVAL != 0 => {
            let mut spec = s.clone();
            spec.flags &= !SET_INTERVAL;
            b.add_interval_set(TABLE, &spec, &ALLOW_FIELDS)
        }
        Op::AddSet(s) => b.add_set(TABLE, s),
        Op::AddChain(c, h) => b.add_chain(TABLE, c, h.as_ref()),
        Op::DelElements(s, e) if interval(s) => b.del_ranges(TABLE, s, &ranges(e)),
        Op::DelElements(s, e) => b.del_elements(TABLE, s, e),
        Op::FlushChain(c) => b.flush_chain(TABLE, c),
        Op::AddRule(c, Rule::Plain(exprs)) => b.add_rule(TABLE, c, exprs),
        Op::AddRule(
            c,
            Rule::Vmap {
                prefix,
                sreg,
                key_type,
                key_len,
                elems,
            },
        ) => b.add_rule_with_vmap(TABLE, c, prefix, *sreg, *key_type, *key_len, elems),
        Op::AddElements(s, e) if interval(s) => b.add_ranges(TABLE, s, &ranges(e)),
        Op::AddElements(s, e) => b.add_elements(TABLE, s, e),
        Op::DestroyChain(c) => b.destroy_chain(TABLE, c),
        Op::DestroySet(s) => b.destroy_set(TABLE, s),
    }
}

/// Keeps table `ip rampart-netpol` in the desired state over one netlink socket.
#[derive(Debug)]
pub struct Applier {
    sock: Socket,
    applied: Option<(u64, Ruleset)>,
}

impl Applier {
    /// Open the socket in the calling thread's network namespace.
    pub fn new() -> Result<Applier, Error> {
        Ok(Applier {
            sock: Socket::open()?,
            applied: None,
        })
    }

    /// Make the table equal `desired`; on failure the next call starts cold.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<SyncStats, Error> {
        let current = self.sock.get_table(Family::Ip, TABLE)?;
        let applied = match (&self.applied, current) {
            (Some((handle, r)), Some(t)) if *handle == t.handle => Some(r),
            _ => None,
        };
        let (ops, mut st) = diff(applied, desired);
        if ops.is_empty() {
            return Ok(st);
        }
        let chunk = if st.cold {
            COLD_CHUNK_MESSAGES
        } else {
            usize::MAX
        };
        let interval = |name: &str| {
            desired
                .sets
                .get(name)
                .or_else(|| applied.and_then(|a| a.sets.get(name)))
                .is_some_and(|s| s.spec.flags & SET_INTERVAL != 0)
        };
        let result = self.send(&ops, chunk, &mut st, &interval);
        match result {
            Ok(()) => {
                let handle = self
                    .sock
                    .get_table(Family::Ip, TABLE)?
                    .map(|t| t.handle)
                    .unwrap_or(0);
                self.applied = Some((handle, desired.clone()));
                Ok(st)
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }

    fn send(
        &self,
        ops: &[Op],
        chunk: usize,
        st: &mut SyncStats,
        interval: &dyn Fn(&str) -> bool,
    ) -> Result<(), Error> {
        let mut b = Batch::new(Family::Ip);
        for op in ops {
            encode(&mut b, op, interval);
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

    /// Remove the table (uninstall, `--disable-network-policy` cleanup).
    pub fn cleanup(&mut self) -> Result<(), Error> {
        let mut b = Batch::new(Family::Ip);
        b.destroy_table(TABLE);
        self.applied = None;
        self.sock.apply(&mut b)
    }
}
