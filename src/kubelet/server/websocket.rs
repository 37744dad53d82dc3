//! The little of WebSocket (RFC 6455) the kubelet's streaming endpoints need, server side:
//! the handshake answer and binary frames. Client frames must be masked (a server refuses
//! unmasked ones), messages are capped at 1 MiB, fragmented messages are reassembled, pings
//! are answered, and a close frame ends the reader.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest message accepted from a client (stdin chunks and resize events are small).
pub const MAX_MESSAGE: usize = 1 << 20;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    use base64::Engine;
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

#[derive(Debug, PartialEq)]
pub enum Message {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Close,
}

/// Read the next data message (answering pings through `pong`), `Message::Close` at the end.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    pongs: &mut Vec<Vec<u8>>,
) -> std::io::Result<Message> {
    let mut message: Vec<u8> = Vec::new();
    let mut kind: Option<u8> = None;
    loop {
        let mut head = [0u8; 2];
        if r.read_exact(&mut head).await.is_err() {
            return Ok(Message::Close);
        }
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        if head[1] & 0x80 == 0 {
            return Err(std::io::Error::other("unmasked client frame"));
        }
        let len = match head[1] & 0x7f {
            126 => u64::from(r.read_u16().await?),
            127 => r.read_u64().await?,
            n => u64::from(n),
        };
        if len as usize > MAX_MESSAGE || message.len() + len as usize > MAX_MESSAGE {
            return Err(std::io::Error::other("message too large"));
        }
        let mut mask = [0u8; 4];
        r.read_exact(&mut mask).await?;
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match opcode {
            0x8 => return Ok(Message::Close),
            0x9 => {
                pongs.push(payload);
                continue;
            }
            0xA => continue,
            0x0 => message.extend_from_slice(&payload),
            0x1 | 0x2 => {
                kind = Some(opcode);
                message = payload;
            }
            _ => return Err(std::io::Error::other("unknown opcode")),
        }
        if fin {
            return Ok(match kind {
                Some(0x1) => Message::Text(message),
                _ => Message::Binary(message),
            });
        }
    }
}

/// One unmasked frame (server to client).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

pub async fn write_binary<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&frame(0x2, payload)).await?;
    w.flush().await
}

pub async fn write_close<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Result<()> {
    // 1000: normal closure.
    w.write_all(&frame(0x8, &[0x03, 0xe8])).await?;
    w.flush().await
}

pub async fn write_pong<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&frame(0xA, payload)).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![
            (if fin { 0x80 } else { 0 }) | opcode,
            0x80 | payload.len() as u8,
        ];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn accept_key_matches_rfc() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn frames() {
        let mut input = masked(0x9, true, b"hi");
        input.extend(masked(0x2, false, b"\x00ab"));
        input.extend(masked(0x0, true, b"c"));
        input.extend(masked(0x8, true, b""));
        let mut r = &input[..];
        let mut pongs = Vec::new();
        assert_eq!(
            read_message(&mut r, &mut pongs).await.unwrap(),
            Message::Binary(b"\x00abc".to_vec())
        );
        assert_eq!(pongs, vec![b"hi".to_vec()]);
        assert_eq!(
            read_message(&mut r, &mut pongs).await.unwrap(),
            Message::Close
        );
        // Unmasked client frames are refused.
        let bad = frame(0x2, b"x");
        assert!(read_message(&mut &bad[..], &mut pongs).await.is_err());
        assert_eq!(frame(0x2, &[7u8; 200])[..4], [0x82, 126, 0, 200]);
    }
}
