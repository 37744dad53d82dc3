//! The sealed snapshot file: a plaintext header (authenticated, not secret) and a body of
//! AES-256-GCM chunks in the STREAM construction, so a tampered, truncated, reordered or
//! extended file fails to open.
//!
//! ```text
//! header: "RAMPSNAP" | version u8 (1) | key id [8] | nonce prefix [7] | created u64 | revision u64
//!         | name length u16 | name
//! chunk:  ciphertext length u32 | ciphertext (plaintext ≤ 1 MiB + 16-byte tag)
//! nonce:  nonce prefix [7] | chunk index u32 | last-chunk flag u8
//! aad:    SHA-256 of the header
//! ```
//! Every number is big-endian. The key id is the first 8 bytes of SHA-256 of the key, so a wrong
//! key is reported as such before any decryption is tried.

use std::io::{Read, Write};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use super::key::SnapshotKey;
use super::Error;

const MAGIC: &[u8; 8] = b"RAMPSNAP";
const VERSION: u8 = 1;
/// Plaintext bytes per chunk.
pub(crate) const CHUNK: usize = 1 << 20;
const TAG: usize = 16;
const MAX_NAME: usize = 255;

/// What the header says about a snapshot (readable without the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The store revision the snapshot holds at least.
    pub revision: u64,
    key_id: [u8; 8],
    nonce_prefix: [u8; 7],
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.name.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.revision.to_be_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    /// Read and check a header; the caller learns the name, time and revision.
    pub fn read(r: &mut impl Read) -> Result<Header, Error> {
        let mut fixed = [0u8; 8 + 1 + 8 + 7 + 8 + 8 + 2];
        read_exact(r, &mut fixed)?;
        if &fixed[..8] != MAGIC {
            return Err(Error::Format("not a Rampart snapshot (bad magic)".into()));
        }
        if fixed[8] != VERSION {
            return Err(Error::Format(format!(
                "unsupported snapshot format version {}",
                fixed[8]
            )));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&fixed[9..17]);
        let mut nonce_prefix = [0u8; 7];
        nonce_prefix.copy_from_slice(&fixed[17..24]);
        let created = u64::from_be_bytes(fixed[24..32].try_into().unwrap_or_default());
        let revision = u64::from_be_bytes(fixed[32..40].try_into().unwrap_or_default());
        let name_len = u16::from_be_bytes([fixed[40], fixed[41]]) as usize;
        if name_len > MAX_NAME {
            return Err(Error::Format("snapshot name too long".into()));
        }
        let mut name = vec![0u8; name_len];
        read_exact(r, &mut name)?;
        let name = String::from_utf8(name)
            .map_err(|_| Error::Format("snapshot name is not UTF-8".into()))?;
        Ok(Header {
            name,
            created,
            revision,
            key_id,
            nonce_prefix,
        })
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Error> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Format("the snapshot is truncated".into()),
        _ => Error::Io(e),
    })
}

fn nonce(prefix: &[u8; 7], index: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn aead_key(key: &SnapshotKey) -> Result<LessSafeKey, Error> {
    UnboundKey::new(&AES_256_GCM, key.bytes())
        .map(LessSafeKey::new)
        .map_err(|_| Error::Crypto("cannot load the snapshot key".into()))
}

/// Writes plaintext, emits sealed chunks. `finish` must be called: it seals the last chunk
/// (possibly empty), without which the file does not open.
pub struct SealWriter<W: Write> {
    out: W,
    key: LessSafeKey,
    aad: [u8; 32],
    nonce_prefix: [u8; 7],
    index: u32,
    buf: Vec<u8>,
}

impl<W: Write> SealWriter<W> {
    pub fn new(
        mut out: W,
        key: &SnapshotKey,
        name: &str,
        created: u64,
        revision: u64,
    ) -> Result<Self, Error> {
        if name.len() > MAX_NAME {
            return Err(Error::Format("snapshot name too long".into()));
        }
        let mut nonce_prefix = [0u8; 7];
        SystemRandom::new()
            .fill(&mut nonce_prefix)
            .map_err(|_| Error::Crypto("no randomness for the snapshot nonce".into()))?;
        let header = Header {
            name: name.to_string(),
            created,
            revision,
            key_id: key.id(),
            nonce_prefix,
        };
        let encoded = header.encode();
        out.write_all(&encoded)?;
        Ok(SealWriter {
            out,
            key: aead_key(key)?,
            aad: Sha256::digest(&encoded).into(),
            nonce_prefix,
            index: 0,
            buf: Vec::with_capacity(CHUNK + TAG),
        })
    }

    fn seal_chunk(&mut self, last: bool) -> Result<(), Error> {
        let mut chunk = std::mem::take(&mut self.buf);
        self.key
            .seal_in_place_append_tag(
                nonce(&self.nonce_prefix, self.index, last),
                Aad::from(self.aad),
                &mut chunk,
            )
            .map_err(|_| Error::Crypto("sealing a chunk failed".into()))?;
        self.out.write_all(&(chunk.len() as u32).to_be_bytes())?;
        self.out.write_all(&chunk)?;
        self.index = self
            .index
            .checked_add(1)
            .ok_or_else(|| Error::Format("snapshot too large".into()))?;
        chunk.clear();
        self.buf = chunk;
        Ok(())
    }

    pub fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            let room = CHUNK - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                self.seal_chunk(false)?;
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<W, Error> {
        self.seal_chunk(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a sealed body chunk by chunk, yielding verified plaintext.
pub struct OpenReader<R: Read> {
    input: R,
    key: LessSafeKey,
    aad: [u8; 32],
    nonce_prefix: [u8; 7],
    index: u32,
    done: bool,
}

impl<R: Read> OpenReader<R> {
    /// Read the header and prepare to open the body; a key that is not the one the snapshot
    /// was sealed with is refused here.
    pub fn new(mut input: R, key: &SnapshotKey) -> Result<(Header, Self), Error> {
        let header = Header::read(&mut input)?;
        if header.key_id != key.id() {
            return Err(Error::WrongKey);
        }
        let aad = Sha256::digest(header.encode()).into();
        let reader = OpenReader {
            input,
            key: aead_key(key)?,
            aad,
            nonce_prefix: header.nonce_prefix,
            index: 0,
            done: false,
        };
        Ok((header, reader))
    }

    /// The next chunk's plaintext, or `None` after the last chunk (then the input must end).
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.done {
            let mut probe = [0u8; 1];
            return match self.input.read(&mut probe)? {
                0 => Ok(None),
                _ => Err(Error::Format("data after the last chunk".into())),
            };
        }
        let mut len = [0u8; 4];
        read_exact(&mut self.input, &mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG..=CHUNK + TAG).contains(&len) {
            return Err(Error::Format(format!("bad chunk length {len}")));
        }
        let mut chunk = vec![0u8; len];
        read_exact(&mut self.input, &mut chunk)?;
        // The last flag is part of the nonce: try "not last" first (the common case), then
        // "last". A chunk that opens as neither was tampered with.
        let mut attempt = chunk.clone();
        let plain_len = match self.key.open_in_place(
            nonce(&self.nonce_prefix, self.index, false),
            Aad::from(self.aad),
            &mut attempt,
        ) {
            Ok(p) => Some(p.len()),
            Err(_) => None,
        };
        let plain = match plain_len {
            Some(n) => {
                attempt.truncate(n);
                attempt
            }
            None => {
                let p = self
                    .key
                    .open_in_place(
                        nonce(&self.nonce_prefix, self.index, true),
                        Aad::from(self.aad),
                        &mut chunk,
                    )
                    .map_err(|_| Error::Tampered)?;
                let n = p.len();
                self.done = true;
                chunk.truncate(n);
                chunk
            }
        };
        self.index = self
            .index
            .checked_add(1)
            .ok_or_else(|| Error::Format("too many chunks".into()))?;
        Ok(Some(plain))
    }
}

/// A `Read` over the verified plaintext of a sealed body.
pub struct PlainReader<R: Read> {
    inner: OpenReader<R>,
    current: Vec<u8>,
    pos: usize,
}

impl<R: Read> PlainReader<R> {
    pub fn new(inner: OpenReader<R>) -> Self {
        PlainReader {
            inner,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl<R: Read> Read for PlainReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            match self.inner.next_chunk() {
                Ok(Some(c)) => {
                    self.current = c;
                    self.pos = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(key: &SnapshotKey, plain: &[u8]) -> Vec<u8> {
        let mut w = SealWriter::new(Vec::new(), key, "t", 1, 2).unwrap();
        w.write(plain).unwrap();
        w.finish().unwrap()
    }

    fn open(key: &SnapshotKey, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let (_, mut r) = OpenReader::new(sealed, key)?;
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk()? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    #[test]
    fn round_trips_across_chunk_boundaries_and_refuses_every_alteration() {
        let key = SnapshotKey::generate().unwrap();
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&key, &plain);
            assert_eq!(open(&key, &sealed).unwrap(), plain, "size {size}");
            // Truncated anywhere, including exactly at a chunk boundary.
            for cut in [sealed.len() - 1, sealed.len() - 17, 60] {
                assert!(open(&key, &sealed[..cut]).is_err(), "size {size} cut {cut}");
            }
            if size > CHUNK {
                let header = 43; // fixed part (42) + the one-byte name
                let boundary = header + 4 + CHUNK + TAG;
                assert!(
                    open(&key, &sealed[..boundary]).is_err(),
                    "dropped last chunk"
                );
            }
            // Any flipped bit, in the header or the body.
            for at in [10, 30, 45, sealed.len() / 2, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[at] ^= 0x40;
                assert!(open(&key, &bad).is_err(), "size {size} flip at {at}");
            }
            // Appended data.
            let mut longer = sealed.clone();
            longer.extend_from_slice(&sealed[50..]);
            assert!(open(&key, &longer).is_err());
        }
        let other = SnapshotKey::generate().unwrap();
        assert!(matches!(
            open(&other, &seal(&key, b"x")),
            Err(Error::WrongKey)
        ));
    }
}
