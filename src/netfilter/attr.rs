//! Netlink attributes (TLV: `u16` length, `u16` type, payload padded to 4 bytes) written into
//! one growing buffer; nests are opened and closed in place so nothing is copied twice.

/// `NLA_F_NESTED`: set on nests, as libmnl does; the kernel accepts both.
const NLA_F_NESTED: u16 = 0x8000;

/// A byte buffer that netlink attributes are appended to.
#[derive(Debug, Default, Clone)]
pub struct Buf {
    pub bytes: Vec<u8>,
}

/// An open nest: its header offset, closed by [`Buf::end`].
#[must_use]
pub struct Nest(usize);

fn pad(n: usize) -> usize {
    (n + 3) & !3
}

impl Buf {
    pub fn new() -> Buf {
        Buf::default()
    }

    pub fn put(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        // Attribute lengths are u16; callers only write short values (names, keys, numbers).
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&len16.to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.bytes.resize(self.bytes.len() + pad(len) - len, 0);
    }

    pub fn put_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v);
    }

    pub fn put_be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn begin(&mut self, ty: u16) -> Nest {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        Nest(at)
    }

    pub fn end(&mut self, nest: Nest) {
        let len = self.bytes.len() - nest.0;
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.bytes[nest.0..nest.0 + 2].copy_from_slice(&len16.to_ne_bytes());
    }
}

/// Iterate the attributes of `bytes` as `(type without flags, payload)`; stops at the first
/// malformed header instead of panicking (the bytes come from the kernel, but still).
pub fn parse(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[pad(len).min(rest.len())..];
        Some((ty, payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_sized() {
        let mut b = Buf::new();
        let n = b.begin(2);
        b.put_str(1, "ab");
        b.put_be32(3, 0x0102_0304);
        b.end(n);
        assert_eq!(
            b.bytes,
            vec![
                20, 0, 2, 0x80, // nest header: 4 + 8 + 8
                7, 0, 1, 0, b'a', b'b', 0, 0, // "ab\0" + 1 pad
                8, 0, 3, 0, 1, 2, 3, 4,
            ]
        );
        let outer: Vec<_> = parse(&b.bytes).collect();
        assert_eq!(outer.len(), 1);
        let inner: Vec<_> = parse(outer[0].1).collect();
        assert_eq!(inner, vec![(1, &b"ab\0"[..]), (3, &[1u8, 2, 3, 4][..])]);
    }

    #[test]
    fn parse_stops_on_garbage() {
        assert_eq!(parse(&[200, 0, 1, 0, 1]).count(), 0);
        assert_eq!(parse(&[2, 0, 1, 0]).count(), 0);
    }
}
