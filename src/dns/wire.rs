//! The DNS wire format (RFC 1035, EDNS0 from RFC 6891): just what a cluster resolver needs.
//! Queries are parsed into a [`Query`] (one question, optional OPT record); answers are
//! encoded with name compression; forwarded responses are only scanned ([`scan_response`]) to
//! find their TTLs, never re-encoded.
//!
//! Invariants: parsing never panics and never reads past the packet (every index is checked;
//! compression pointers must point backwards, so a loop is impossible); a response never
//! exceeds the size the client can take: over it, the answer is replaced by a header and
//! question with the TC bit (RFC 2181 §9), so the client retries over TCP.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// Plain DNS over UDP without EDNS (RFC 1035 §4.2.1).
pub const UDP_MIN: usize = 512;
/// The largest UDP payload we answer with whatever the client advertises (DNS flag day 2020).
pub const UDP_MAX: usize = 1232;
/// The EDNS payload size we advertise.
pub const EDNS_SIZE: u16 = 1232;

/// Why a packet is not a query we can answer.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Too short for a header, a response, or garbage: drop it (no reply can be addressed).
    Drop,
    /// A header we can reply to, but the rest is malformed or unsupported.
    Reply { id: u16, rcode: u8, opcode: u8 },
}

/// One question, parsed.
#[derive(Debug, Clone)]
pub struct Query {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    /// Lowercase presentation form without the final dot (`""` is the root).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section exactly as sent (case kept: some clients check it, RFC 1035 §7.3).
    pub question: Vec<u8>,
    /// The client's EDNS UDP payload size, if it sent an OPT record.
    pub edns: Option<u16>,
}

impl Query {
    /// The most a UDP reply to this query may carry.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(size) => (size as usize).clamp(UDP_MIN, UDP_MAX),
            None => UDP_MIN,
        }
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *p.get(at)?,
        *p.get(at + 1)?,
        *p.get(at + 2)?,
        *p.get(at + 3)?,
    ]))
}

/// Read a (possibly compressed) name at `at`: returns the lowercase presentation form and the
/// offset just past the name in the original position. Pointers must point strictly
/// backwards, which bounds the walk.
pub fn read_name(p: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut end = None;
    let mut limit = at;
    let mut total = 0usize;
    loop {
        let len = *p.get(at)? as usize;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    return Some((out, end.unwrap_or(at + 1)));
                }
                let label = p.get(at + 1..at + 1 + len)?;
                total += len + 1;
                if total > 255 {
                    return None;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    // A dot or a non-printable byte inside a label cannot be one of our names;
                    // escape it so it can never match a record by accident.
                    if b == b'.' || !b.is_ascii_graphic() {
                        out.push_str(&format!("\\{b:03}"));
                    } else {
                        out.push(b.to_ascii_lowercase() as char);
                    }
                }
                at += 1 + len;
            }
            0xC0 => {
                let target = (u16_at(p, at)? & 0x3FFF) as usize;
                if target >= limit {
                    return None;
                }
                if end.is_none() {
                    end = Some(at + 2);
                }
                limit = target;
                at = target;
            }
            _ => return None,
        }
    }
}

/// Parse a query. Responses, truncated headers and anything before the question that cannot
/// be read are dropped; a readable header with a bad body gets FORMERR (or NOTIMP for opcodes
/// other than QUERY), as upstream servers answer.
pub fn parse_query(p: &[u8]) -> Result<Query, ParseError> {
    if p.len() < 12 {
        return Err(ParseError::Drop);
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let flags = u16::from_be_bytes([p[2], p[3]]);
    if flags & 0x8000 != 0 {
        // A response: never answer it (that is how reflection loops start).
        return Err(ParseError::Drop);
    }
    let opcode = ((flags >> 11) & 0xF) as u8;
    let formerr = ParseError::Reply {
        id,
        rcode: RCODE_FORMERR,
        opcode,
    };
    if opcode != 0 {
        return Err(ParseError::Reply {
            id,
            rcode: RCODE_NOTIMP,
            opcode,
        });
    }
    let qd = u16::from_be_bytes([p[4], p[5]]);
    let an = u16::from_be_bytes([p[6], p[7]]);
    let ns = u16::from_be_bytes([p[8], p[9]]);
    let ar = u16::from_be_bytes([p[10], p[11]]);
    if qd != 1 || an != 0 || ns != 0 {
        return Err(formerr);
    }
    let (name, after) = read_name(p, 12).ok_or(ParseError::Reply {
        id,
        rcode: RCODE_FORMERR,
        opcode,
    })?;
    let (Some(qtype), Some(qclass)) = (u16_at(p, after), u16_at(p, after + 2)) else {
        return Err(formerr);
    };
    let question = p[12..after + 4].to_vec();
    let mut at = after + 4;
    let mut edns = None;
    for _ in 0..ar {
        let Some((rname, next)) = read_name(p, at) else {
            return Err(formerr);
        };
        let (Some(rtype), Some(rclass), Some(rdlen)) =
            (u16_at(p, next), u16_at(p, next + 2), u16_at(p, next + 8))
        else {
            return Err(formerr);
        };
        let end = next + 10 + rdlen as usize;
        if end > p.len() {
            return Err(formerr);
        }
        if rtype == TYPE_OPT {
            // One OPT record, owned by the root (RFC 6891 §6.1.1).
            if edns.is_some() || !rname.is_empty() {
                return Err(formerr);
            }
            edns = Some(rclass);
        }
        at = end;
    }
    Ok(Query {
        id,
        opcode,
        recursion_desired: flags & 0x0100 != 0,
        name,
        qtype,
        qclass,
        question,
        edns,
    })
}

/// Record data we answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Ptr(String),
    Ns(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Soa {
        mname: String,
        rname: String,
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
}

impl RData {
    pub fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => TYPE_A,
            RData::Aaaa(_) => TYPE_AAAA,
            RData::Cname(_) => TYPE_CNAME,
            RData::Ptr(_) => TYPE_PTR,
            RData::Ns(_) => TYPE_NS,
            RData::Srv { .. } => TYPE_SRV,
            RData::Soa { .. } => TYPE_SOA,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

/// An answer from our own data (not a forwarded one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

/// Writes names with compression against names already written (RFC 1035 §4.1.4).
struct Writer {
    buf: Vec<u8>,
    /// (suffix in presentation form, offset) of every name suffix written so far.
    names: Vec<(String, u16)>,
}

impl Writer {
    fn name(&mut self, name: &str) {
        let mut rest = name;
        loop {
            if rest.is_empty() {
                self.buf.push(0);
                return;
            }
            if let Some((_, off)) = self.names.iter().find(|(n, _)| n == rest) {
                self.buf.extend_from_slice(&(0xC000 | *off).to_be_bytes());
                return;
            }
            if self.buf.len() < 0x3FFF {
                self.names.push((rest.to_string(), self.buf.len() as u16));
            }
            let (label, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let label = &label.as_bytes()[..label.len().min(63)];
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label);
            rest = tail;
        }
    }

    fn record(&mut self, r: &Record) {
        self.name(&r.name);
        self.buf.extend_from_slice(&r.data.rtype().to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &r.data {
            RData::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Aaaa(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Cname(n) | RData::Ptr(n) | RData::Ns(n) => self.name(n),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.buf.extend_from_slice(&priority.to_be_bytes());
                self.buf.extend_from_slice(&weight.to_be_bytes());
                self.buf.extend_from_slice(&port.to_be_bytes());
                // RFC 2782: the target is not compressed.
                let names = std::mem::take(&mut self.names);
                self.name(target);
                self.names = names;
            }
            RData::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                self.name(mname);
                self.name(rname);
                for v in [serial, refresh, retry, expire, minimum] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        let len = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }
}

fn header(
    id: u16,
    opcode: u8,
    rd: bool,
    aa: bool,
    tc: bool,
    rcode: u8,
    counts: [u16; 4],
) -> Vec<u8> {
    let mut flags: u16 = 0x8000 | ((opcode as u16 & 0xF) << 11) | (rcode as u16 & 0xF);
    if aa {
        flags |= 0x0400;
    }
    if tc {
        flags |= 0x0200;
    }
    if rd {
        flags |= 0x0100;
    }
    // RA: we do recurse (by forwarding) for names outside the cluster.
    flags |= 0x0080;
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn opt_record(buf: &mut Vec<u8>) {
    buf.push(0);
    buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
    buf.extend_from_slice(&EDNS_SIZE.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
}

/// Encode `answer` to `q`, at most `limit` bytes: over it, header + question with TC set.
pub fn encode(q: &Query, answer: &Answer, limit: usize) -> Vec<u8> {
    let edns = q.edns.is_some() as u16;
    let mut w = Writer {
        buf: header(
            q.id,
            q.opcode,
            q.recursion_desired,
            answer.authoritative,
            false,
            answer.rcode,
            [
                1,
                answer.answers.len() as u16,
                answer.authority.len() as u16,
                answer.additional.len() as u16 + edns,
            ],
        ),
        names: Vec::new(),
    };
    w.buf.extend_from_slice(&q.question);
    // The question's name is at offset 12; later names compress against it.
    if !q.name.is_empty() && !q.name.contains('\\') {
        let mut off = 12u16;
        let mut rest = q.name.as_str();
        while !rest.is_empty() {
            w.names.push((rest.to_string(), off));
            let (label, tail) = rest.split_once('.').unwrap_or((rest, ""));
            off += label.len() as u16 + 1;
            rest = tail;
        }
    }
    for r in answer
        .answers
        .iter()
        .chain(&answer.authority)
        .chain(&answer.additional)
    {
        w.record(r);
    }
    if q.edns.is_some() {
        opt_record(&mut w.buf);
    }
    if w.buf.len() <= limit {
        return w.buf;
    }
    truncated(q, answer.rcode, answer.authoritative)
}

/// Header + question with TC set (and our OPT if the client speaks EDNS).
pub fn truncated(q: &Query, rcode: u8, aa: bool) -> Vec<u8> {
    let edns = q.edns.is_some() as u16;
    let mut buf = header(
        q.id,
        q.opcode,
        q.recursion_desired,
        aa,
        true,
        rcode,
        [1, 0, 0, edns],
    );
    buf.extend_from_slice(&q.question);
    if q.edns.is_some() {
        opt_record(&mut buf);
    }
    buf
}

/// A bare error reply (FORMERR, NOTIMP, SERVFAIL...) for `q`.
pub fn error_reply(q: &Query, rcode: u8) -> Vec<u8> {
    encode(
        q,
        &Answer {
            rcode,
            ..Default::default()
        },
        usize::MAX,
    )
}

/// An error reply to a packet whose question could not be parsed: header only.
pub fn error_header(id: u16, opcode: u8, rcode: u8) -> Vec<u8> {
    header(id, opcode, false, false, false, rcode, [0, 0, 0, 0])
}

/// What the cache needs from a forwarded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub rcode: u8,
    pub truncated: bool,
    pub answers: u16,
    /// Offsets of every TTL field outside the OPT record (to age them when served from cache).
    pub ttl_offsets: Vec<usize>,
    /// The smallest TTL of the answer section (positive caching).
    pub min_answer_ttl: Option<u32>,
    /// min(SOA TTL, SOA minimum) from the authority section (negative caching, RFC 2308 §5).
    pub negative_ttl: Option<u32>,
}

/// Walk a response: rcode, TC, and where its TTLs are. `None` if it is not a well-formed
/// response.
pub fn scan_response(p: &[u8]) -> Option<Scanned> {
    let flags = u16_at(p, 2)?;
    if flags & 0x8000 == 0 {
        return None;
    }
    let counts = [u16_at(p, 4)?, u16_at(p, 6)?, u16_at(p, 8)?, u16_at(p, 10)?];
    let mut at = 12;
    for _ in 0..counts[0] {
        let (_, next) = read_name(p, at)?;
        at = next + 4;
        if at > p.len() {
            return None;
        }
    }
    let mut s = Scanned {
        rcode: (flags & 0xF) as u8,
        truncated: flags & 0x0200 != 0,
        answers: counts[1],
        ttl_offsets: Vec::new(),
        min_answer_ttl: None,
        negative_ttl: None,
    };
    for (section, &count) in counts.iter().enumerate().skip(1) {
        for _ in 0..count {
            let (_, next) = read_name(p, at)?;
            let rtype = u16_at(p, next)?;
            let ttl = u32_at(p, next + 4)?;
            let rdlen = u16_at(p, next + 8)? as usize;
            let rdata = next + 10;
            let end = rdata + rdlen;
            if end > p.len() {
                return None;
            }
            if rtype != TYPE_OPT {
                s.ttl_offsets.push(next + 4);
            }
            if section == 1 {
                s.min_answer_ttl = Some(s.min_answer_ttl.map_or(ttl, |m| m.min(ttl)));
            }
            if section == 2 && rtype == TYPE_SOA {
                let (_, after_m) = read_name(p, rdata)?;
                let (_, after_r) = read_name(p, after_m)?;
                let minimum = u32_at(p, after_r + 16)?;
                s.negative_ttl = Some(ttl.min(minimum));
            }
            at = end;
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        p
    }

    #[test]
    fn parses_and_lowercases() {
        let q = parse_query(&query("Foo.Default.SVC.cluster.local", TYPE_A)).unwrap();
        assert_eq!(q.name, "foo.default.svc.cluster.local");
        assert_eq!(q.id, 0x1234);
        assert!(q.recursion_desired);
        assert_eq!(q.udp_limit(), 512);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(parse_query(&[1, 2, 3]), Err(ParseError::Drop)));
        let mut p = query("a.b", TYPE_A);
        p.truncate(15);
        assert!(matches!(
            parse_query(&p),
            Err(ParseError::Reply {
                rcode: RCODE_FORMERR,
                ..
            })
        ));
        // A pointer to itself.
        let mut p = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1];
        assert!(parse_query(&p).is_err());
        p[13] = 200;
        assert!(parse_query(&p).is_err());
        // Every prefix of a valid query and every single-byte corruption: no panic.
        let good = query("x.default.svc.cluster.local", TYPE_SRV);
        for n in 0..good.len() {
            let _ = parse_query(&good[..n]);
            for b in [0u8, 0x3F, 0xC0, 0xFF] {
                let mut bad = good.clone();
                bad[n] = b;
                let _ = parse_query(&bad);
                let _ = scan_response(&bad);
            }
        }
    }

    #[test]
    fn encodes_compressed_and_scans_back() {
        let q = parse_query(&query("web.default.svc.cluster.local", TYPE_A)).unwrap();
        let a = Answer {
            rcode: RCODE_NOERROR,
            authoritative: true,
            answers: vec![Record {
                name: "web.default.svc.cluster.local".into(),
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 43, 0, 7)),
            }],
            ..Default::default()
        };
        let out = encode(&q, &a, 512);
        // 12 header + question (31 + 4) + answer with a 2-byte pointer (2+10+4).
        assert_eq!(out.len(), 12 + 35 + 16);
        let s = scan_response(&out).unwrap();
        assert_eq!(s.answers, 1);
        assert_eq!(s.min_answer_ttl, Some(5));
        assert_eq!(s.ttl_offsets.len(), 1);
    }

    #[test]
    fn truncates_over_the_limit() {
        let q = parse_query(&query("big.default.svc.cluster.local", TYPE_A)).unwrap();
        let answers = (0..100u8)
            .map(|i| Record {
                name: "big.default.svc.cluster.local".into(),
                ttl: 5,
                data: RData::A(Ipv4Addr::new(10, 42, 0, i)),
            })
            .collect();
        let a = Answer {
            answers,
            ..Default::default()
        };
        let out = encode(&q, &a, 512);
        assert!(out[2] & 0x02 != 0, "TC set");
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), 0);
        assert!(encode(&q, &a, 65535).len() > 512);
    }
}
