//! Container logs in the CRI format (what the kubelet and `kubectl logs` read):
//! `<RFC 3339 nano timestamp> <stdout|stderr> <F|P> <text>\n`, one line per line of output,
//! `P` for a part of a line longer than 16 KiB. Unfinished lines are held until their
//! newline (or 16 KiB, or the stream's end), so a pipe read never splits a line.
//!
//! Rotation (upstream's `containerLogMaxSize` 10 MiB × `containerLogMaxFiles` 5) is done by
//! the shim itself, the one writer of the file, at a line boundary: `N.log` is renamed to
//! `N.log.<UTC YYYYMMDD-HHMMSS.nnnnnnnnn>` and a new `N.log` is opened, and the oldest rotated
//! files beyond `max_files - 1` are removed. Upstream's kubelet asks the runtime to reopen the
//! file after renaming it; having the writer rotate avoids that race. Rotated files are not
//! gzip-compressed (upstream compresses all but the newest). Readers (`kubectl logs`) read the
//! current file only, as upstream's `ReadLogs` does.

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

/// Upstream's default `containerLogMaxSize`.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Upstream's default `containerLogMaxFiles` (the current file included).
pub const MAX_FILES: u32 = 5;

/// A container's log file, rotated by size.
pub struct LogFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl LogFile {
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> std::io::Result<LogFile> {
        let file = open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let ts = jiff::Timestamp::now()
            .strftime("%Y%m%d-%H%M%S.%f")
            .to_string();
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(format!(".{ts}"));
        std::fs::rename(&self.path, &rotated)?;
        self.file = open(&self.path)?;
        self.size = 0;
        self.prune();
        Ok(())
    }

    /// Keep the newest `max_files - 1` rotated files (names sort by time).
    fn prune(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut old: Vec<std::path::PathBuf> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        old.sort();
        let keep = self.max_files.saturating_sub(1) as usize;
        if old.len() > keep {
            for p in &old[..old.len() - keep] {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

impl Write for LogFile {
    /// Called with one whole CRI line at a time (`write_line`), so rotation falls between
    /// lines.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            // A failed rotation keeps writing to the current file rather than losing output.
            let _ = self.rotate();
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
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
    #[allow(clippy::disallowed_methods)] // a unit test on its own thread: distinct timestamps
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c").join("0.log");
        let mut f = super::LogFile::open(&path, 100, 3).unwrap();
        let mut s = super::Stream::new("stdout");
        for i in 0..40 {
            s.feed(format!("line number {i:04}\n").as_bytes(), &mut f)
                .unwrap();
            // Distinct rotation timestamps.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"0.log".to_string()));
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 100, "{current}");
        assert!(current.ends_with("line number 0039\n"), "{current}");
        // Every file holds whole lines only.
        for n in &names {
            let text = std::fs::read_to_string(path.parent().unwrap().join(n)).unwrap();
            assert!(
                text.lines().all(|l| l.contains(" stdout F line number ")),
                "{text}"
            );
        }
    }

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
