//! The part of SPDY/3.1 (draft 3.1, as `moby/spdystream` speaks it for client-go) the
//! kubelet's port-forward needs, server side: frame parsing from a byte stream, the frames
//! a server sends (SYN_REPLY, DATA, RST_STREAM, PING, GOAWAY), and header blocks.
//!
//! Header blocks are zlib-compressed with one stream per direction and connection, primed
//! with the SPDY/3 dictionary (`spdy_dictionary.bin`, 1,423 bytes, the spec's). Inflating
//! uses `miniz_oxide` with a wrapping 64 KiB window pre-filled with the dictionary; the
//! zlib header's FDICT id is skipped. Our own header blocks are written as stored
//! (uncompressed) deflate blocks after a zlib header without FDICT, each block ended by the
//! sync-flush marker as zlib's `Z_SYNC_FLUSH` writes it (Go's reader needs it, see
//! `Deflater::compress`), so nothing needs a deflater with a dictionary.
//!
//! Bounds: a frame is at most 1 MiB + 8 (client-go writes 32 KiB data frames), a header
//! block inflates to at most 64 KiB and holds at most 64 pairs; anything else is a protocol
//! error that ends the session.

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The SPDY/3 header compression dictionary.
pub const DICTIONARY: &[u8] = include_bytes!("spdy_dictionary.bin");

const MAX_FRAME: usize = (1 << 20) + 8;
const MAX_HEADER_BLOCK: usize = 64 * 1024;
const MAX_PAIRS: usize = 64;
const WINDOW: usize = 64 * 1024;
/// An empty, non-final stored deflate block: what zlib's `Z_SYNC_FLUSH` writes.
const SYNC_FLUSH: [u8; 5] = [0x00, 0x00, 0x00, 0xff, 0xff];

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const FLAG_FIN: u8 = 1;

/// RST_STREAM status codes used here.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Control {
        kind: u16,
        flags: u8,
        body: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

/// Takes one whole frame off the front of `buf`, if it holds one.
pub fn parse(buf: &mut Vec<u8>) -> Result<Option<Frame>, String> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if len + 8 > MAX_FRAME {
        return Err(format!("frame of {len} bytes is too large"));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let flags = buf[4];
    let body: Vec<u8> = buf[8..8 + len].to_vec();
    let head = [buf[0], buf[1], buf[2], buf[3]];
    buf.drain(..8 + len);
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(format!("SPDY version {version} is not supported"));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            body,
        }))
    } else {
        Ok(Some(Frame::Data {
            stream: u32::from_be_bytes(head) & 0x7fff_ffff,
            flags,
            data: body,
        }))
    }
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(0x8003u16).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

/// A DATA frame (at most 16 MiB - 1 of `data`; callers send 32 KiB chunks).
pub fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(data);
    out
}

pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
    let mut b = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    b.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &b)
}

/// The answer to a PING: the same frame back.
pub fn ping(body: &[u8]) -> Vec<u8> {
    control(PING, 0, body)
}

pub fn goaway(last_stream: u32) -> Vec<u8> {
    let mut b = (last_stream & 0x7fff_ffff).to_be_bytes().to_vec();
    b.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &b)
}

/// The header block of `pairs`, uncompressed.
fn header_block(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (pairs.len() as u32).to_be_bytes().to_vec();
    for (k, v) in pairs {
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// Our direction's header compressor: stored deflate blocks in one zlib stream.
#[derive(Default)]
pub struct Deflater {
    started: bool,
}

impl Deflater {
    fn compress(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 8);
        if !self.started {
            // CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (no dictionary, check bits).
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in raw.chunks(0xffff) {
            // BFINAL 0, BTYPE 00 (stored), padded to the byte; LEN and its complement.
            out.push(0);
            let n = chunk.len() as u16;
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(!n).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // The sync-flush marker (an empty stored block), as zlib's Z_SYNC_FLUSH ends every
        // SPDY header block. It is needed, not decoration: Go's flate reader hands out a
        // stored block's bytes only when the next block header is read, so without the marker
        // it reads past the frame's end, its error sticks, and the *next* SYN_REPLY fails
        // (spdystream then drops the connection: kubectl's `lost connection to pod`).
        out.extend_from_slice(&SYNC_FLUSH);
        out
    }

    /// A SYN_REPLY for `stream` with `pairs`.
    pub fn syn_reply(&mut self, stream: u32, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut b = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
        b.extend_from_slice(&self.compress(&header_block(pairs)));
        control(SYN_REPLY, 0, &b)
    }
}

/// The peer's header decompressor (one per connection).
pub struct Inflater {
    state: Box<DecompressorOxide>,
    window: Vec<u8>,
    pos: usize,
    header_left: usize,
}

impl Default for Inflater {
    fn default() -> Self {
        let mut window = vec![0u8; WINDOW];
        window[..DICTIONARY.len()].copy_from_slice(DICTIONARY);
        Inflater {
            state: Box::default(),
            window,
            pos: DICTIONARY.len(),
            // CMF, FLG, and (with FDICT) the dictionary's adler32.
            header_left: 2,
        }
    }
}

impl Inflater {
    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, String> {
        while self.header_left > 0 {
            let Some((&b, rest)) = input.split_first() else {
                return Err("truncated zlib header".into());
            };
            if self.header_left == 2 && b & 0x0f != 8 {
                return Err("header block is not deflate".into());
            }
            if self.header_left == 1 && b & 0x20 != 0 {
                if rest.len() < 4 {
                    return Err("truncated zlib header".into());
                }
                input = &rest[4..];
                self.header_left = 0;
                break;
            }
            input = rest;
            self.header_left -= 1;
        }
        let mut out = Vec::new();
        let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
        loop {
            let (status, used, written) =
                decompress(&mut self.state, input, &mut self.window, self.pos, flags);
            let end = self.pos + written;
            out.extend_from_slice(&self.window[self.pos..end.min(WINDOW)]);
            self.pos = end % WINDOW;
            input = &input[used..];
            if out.len() > MAX_HEADER_BLOCK {
                return Err("header block too large".into());
            }
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done if input.is_empty() => {
                    return Ok(out)
                }
                TINFLStatus::NeedsMoreInput => continue,
                s => return Err(format!("bad header block: {s:?}")),
            }
        }
    }

    /// The name/value pairs of a compressed header block (names lowercase, as SPDY/3).
    pub fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, String> {
        let raw = self.inflate(block)?;
        let mut r = &raw[..];
        let mut take = |n: usize| -> Result<&[u8], String> {
            if r.len() < n {
                return Err("truncated header block".into());
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let count = be(take(4)?);
        if count > MAX_PAIRS {
            return Err(format!("{count} headers are too many"));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let n = be(take(4)?);
            let k = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
            let n = be(take(4)?);
            let v = String::from_utf8_lossy(take(n)?).into_owned();
            pairs.push((k, v));
        }
        Ok(pairs)
    }
}

/// A SYN_STREAM's stream id and header block.
pub fn syn_stream(body: &[u8]) -> Result<(u32, &[u8]), String> {
    if body.len() < 10 {
        return Err("short SYN_STREAM".into());
    }
    let id = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff;
    Ok((id, &body[10..]))
}

/// The stream id of a RST_STREAM.
pub fn rst_stream_id(body: &[u8]) -> Option<u32> {
    let b: [u8; 4] = body.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b) & 0x7fff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dictionary_is_the_specs() {
        assert_eq!(DICTIONARY.len(), 1423);
        let d = ring::digest::digest(&ring::digest::SHA256, DICTIONARY);
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    #[test]
    fn inflates_two_blocks_of_one_stream_with_the_dictionary() {
        // zlib (Python, level 9, zdict = the dictionary), each block sync-flushed, as Go's
        // framer writes a SYN_STREAM's headers.
        let a = unhex("78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff");
        let b = unhex("c2aa19540e2512d60b000000ffff");
        let mut inf = Inflater::default();
        let h = inf.headers(&a).unwrap();
        assert_eq!(
            h,
            [
                ("streamtype".to_string(), "error".to_string()),
                ("port".into(), "8080".into()),
                ("requestid".into(), "0".into())
            ]
        );
        let h = inf.headers(&b).unwrap();
        assert_eq!(h[0], ("streamtype".to_string(), "data".to_string()));
        // Garbage is an error, not a panic.
        assert!(Inflater::default().headers(&[0x78, 0xf9, 1, 2]).is_err());
        assert!(Inflater::default().headers(&[0x11]).is_err());
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = data(5, true, b"hello");
        buf.extend(ping(&7u32.to_be_bytes()));
        buf.extend_from_slice(&[0x80, 0x03]);
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(Frame::Data {
                stream: 5,
                flags: FLAG_FIN,
                data: b"hello".to_vec()
            })
        );
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                body: 7u32.to_be_bytes().to_vec()
            })
        );
        assert_eq!(parse(&mut buf).unwrap(), None);
        let mut big = vec![0x80, 0x03, 0, 1, 0, 0xff, 0xff, 0xff];
        assert!(parse(&mut big).is_err());
        // Our SYN_REPLY's stored blocks inflate back (an inflater reading our direction).
        let mut d = Deflater::default();
        let r1 = d.syn_reply(1, &[]);
        let r2 = d.syn_reply(3, &[("a", "b")]);
        let mut inf = Inflater {
            header_left: 2,
            ..Default::default()
        };
        // Each block ends with the sync-flush marker (what Go's inflater needs to stop at
        // the frame's end).
        assert!(r1.ends_with(&SYNC_FLUSH) && r2.ends_with(&SYNC_FLUSH));
        assert_eq!(inf.headers(&r1[12..]).unwrap(), vec![]);
        assert_eq!(
            inf.headers(&r2[12..]).unwrap(),
            vec![("a".to_string(), "b".to_string())]
        );
    }
}
