//! Container logs in the CRI format (what the kubelet and `kubectl logs` read):
//! `<RFC 3339 nano timestamp> <stdout|stderr> <F|P> <text>\n`, one line per line of output,
//! `P` for a part of a line longer than 16 KiB. Unfinished lines are held until their
//! newline (or 16 KiB, or the stream's end), so a pipe read never splits a line.

use std::io::Write;
use std::path::Path;

const MAX_LINE: usize = 16 * 1024;

/// One stream of one container, buffering an unfinished line.
pub struct Stream {
    pub name: &'static str,
    pending: Vec<u8>,
}

impl Stream {
    pub fn new(name: &'static str) -> Self {
        Stream {
            name,
            pending: Vec::new(),
        }
    }

    /// Add bytes read from the pipe; complete lines go to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        self.pending.extend_from_slice(data);
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            write_line(out, self.name, "F", &line[..line.len() - 1])?;
        }
        while self.pending.len() >= MAX_LINE {
            let part: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            write_line(out, self.name, "P", &part)?;
        }
        Ok(())
    }

    /// The stream ended: flush what is left as a final (full) line.
    pub fn close(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            write_line(out, self.name, "F", &rest)?;
        }
        Ok(())
    }
}

fn write_line(out: &mut impl Write, stream: &str, tag: &str, text: &[u8]) -> std::io::Result<()> {
    let ts = jiff::Timestamp::now();
    let mut buf = Vec::with_capacity(text.len() + 48);
    write!(buf, "{ts:.9} {stream} {tag} ")?;
    buf.extend_from_slice(text);
    buf.push(b'\n');
    out.write_all(&buf)
}

/// Open (append) a log file, creating its directories (0755) and the file (0640).
pub fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines() {
        let mut s = super::Stream::new("stdout");
        let mut out = Vec::new();
        s.feed(b"hi\npart", &mut out).unwrap();
        s.feed(b"ial\n", &mut out).unwrap();
        s.feed(b"tail", &mut out).unwrap();
        s.close(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(" stdout F hi"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout F partial"));
        assert!(lines[2].ends_with(" stdout F tail"));
    }
}
