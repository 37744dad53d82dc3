//! The audit sink: `DIR/audit.log` (0600, in a 0700 directory), rotated by size to
//! `audit-<RFC 3339 time with ':' as '-'>.log` (so names sort in chain order), keeping at most
//! `max_backups` rotated files (0 keeps all). The chain continues across files and restarts.
//!
//! Durability: each line is one `write(2)` of the whole line, done before the response is
//! returned. There is no fsync: a line survives a crash of the process, not of the machine.
//!
//! Fail closed: a failed write marks the sink unhealthy and drops the file. While unhealthy,
//! [`Sink::writable`] (checked before a request is served) retries opening at most every
//! 500 ms and otherwise says no, so the request path answers 503 before anything changes.
//! `writable` also stats `audit.log` (at most every 10 ms), so a moved or removed log is
//! caught before serving; a
//! write that fails later (disk full) turns that request's response into the 503, but a
//! mutation it made stays applied (its line may be partial: see crash recovery).
//! The directory is only created at start: a directory removed later stays a failure (a new,
//! empty chain would silently hide the old one). Each write also checks that `audit.log` is
//! still the file it holds open, so a moved or deleted log fails instead of writing to a
//! dangling inode.
//!
//! Crash recovery: on open, a last line without its newline (a write cut short) is ended
//! with a newline and followed by a `ChainResume` line whose `prevHash` is the hash of the
//! last complete line and whose annotations record the SHA-256 and length of the broken tail;
//! `verify` accepts a broken line only when such a marker follows it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::event::{hex, micro_timestamp, Event, GENESIS};
use super::policy::Policy;

pub const CURRENT: &str = "audit.log";
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How long a successful check that `audit.log` is the open file is trusted.
const RECHECK_EVERY: Duration = Duration::from_millis(10);
/// How far back from the end the last complete line is looked for.
const TAIL_WINDOW: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub max_size: u64,
    pub max_backups: usize,
    pub policy: Policy,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the audit log in {dir}: {source}")]
    Open { dir: String, source: std::io::Error },
    #[error("cannot write the audit log: {0}")]
    Write(std::io::Error),
    #[error("the audit log was moved or removed")]
    Gone,
}

pub struct Sink {
    cfg: Config,
    inner: Mutex<Inner>,
    healthy: AtomicBool,
}

struct Inner {
    file: Option<File>,
    ino: (u64, u64),
    /// When `audit.log` was last seen to be the file held open (see `still_current`).
    checked_at: Option<Instant>,
    size: u64,
    prev: String,
    last_try: Option<Instant>,
}

impl Sink {
    /// Creates the directory if needed and resumes the chain.
    pub fn open(cfg: Config) -> Result<Sink, Error> {
        let open_err = |source| Error::Open {
            dir: cfg.dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&cfg.dir).map_err(open_err)?;
        std::fs::set_permissions(&cfg.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(open_err)?;
        let mut inner = Inner {
            file: None,
            ino: (0, 0),
            checked_at: None,
            size: 0,
            prev: GENESIS.into(),
            last_try: None,
        };
        inner.reopen(&cfg.dir).map_err(open_err)?;
        Ok(Sink {
            cfg,
            inner: Mutex::new(inner),
            healthy: AtomicBool::new(true),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.cfg.policy
    }

    /// Whether a request may be served now (see the module docs).
    pub fn writable(&self) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        if self.healthy.load(Ordering::Acquire) {
            // One stat(2): a log moved or removed is refused before the request is served.
            if inner.still_current(&self.cfg.dir) {
                return true;
            }
            tracing::error!("the audit log was moved or removed: refusing requests");
            self.healthy.store(false, Ordering::Release);
            inner.file = None;
            inner.last_try = None;
        }
        if inner.last_try.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return false;
        }
        inner.last_try = Some(Instant::now());
        if !self.cfg.dir.is_dir() {
            return false;
        }
        match inner.reopen(&self.cfg.dir) {
            Ok(()) => {
                tracing::info!("the audit log is writable again");
                self.healthy.store(true, Ordering::Release);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "the audit log is still not writable");
                false
            }
        }
    }

    /// Appends `event`, chained to the previous line.
    pub fn record(&self, mut event: Event) -> Result<(), Error> {
        let Ok(mut inner) = self.inner.lock() else {
            return Err(Error::Gone);
        };
        let result = inner.append(&self.cfg, &mut event);
        if let Err(e) = &result {
            if self.healthy.swap(false, Ordering::AcqRel) {
                tracing::error!(error = %e, "the audit log cannot be written: refusing requests");
            }
            inner.file = None;
            inner.last_try = Some(Instant::now());
        }
        result
    }
}

impl Inner {
    fn append(&mut self, cfg: &Config, event: &mut Event) -> Result<(), Error> {
        if self.file.is_none() {
            return Err(Error::Gone);
        }
        if !self.still_current(&cfg.dir) {
            return Err(Error::Gone);
        }
        let mut line = event.seal(&self.prev);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > cfg.max_size {
            self.rotate(cfg).map_err(Error::Write)?;
        }
        let file = self.file.as_mut().ok_or(Error::Gone)?;
        file.write_all(&line).map_err(Error::Write)?;
        self.size += line.len() as u64;
        self.prev = event.hash.clone().unwrap_or_default();
        Ok(())
    }

    /// Whether `audit.log` is still the file held open. One stat(2) per [`RECHECK_EVERY`] at
    /// most: a stat costs several microseconds here, a tenth of a cached GET, and a log moved
    /// a few milliseconds ago is still a real file holding the lines (and a deleted one breaks
    /// the chain visibly for `verify`).
    fn still_current(&mut self, dir: &Path) -> bool {
        if self.file.is_none() {
            return false;
        }
        if self.checked_at.is_some_and(|t| t.elapsed() < RECHECK_EVERY) {
            return true;
        }
        let ok = std::fs::metadata(dir.join(CURRENT)).is_ok_and(|m| (m.dev(), m.ino()) == self.ino);
        self.checked_at = ok.then(Instant::now);
        ok
    }

    fn rotate(&mut self, cfg: &Config) -> std::io::Result<()> {
        let stamp = micro_timestamp(jiff::Timestamp::now()).replace(':', "-");
        let current = cfg.dir.join(CURRENT);
        std::fs::rename(&current, cfg.dir.join(format!("audit-{stamp}.log")))?;
        self.open_file(&current)?;
        if cfg.max_backups > 0 {
            let rotated = rotated_files(&cfg.dir)?;
            let excess = rotated.len().saturating_sub(cfg.max_backups);
            for old in &rotated[..excess] {
                std::fs::remove_file(old)?;
            }
        }
        Ok(())
    }

    fn open_file(&mut self, path: &Path) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let meta = file.metadata()?;
        self.ino = (meta.dev(), meta.ino());
        self.checked_at = None;
        self.size = meta.len();
        self.file = Some(file);
        Ok(())
    }

    /// Opens `audit.log` and finds the hash to chain to (see the module docs).
    fn reopen(&mut self, dir: &Path) -> std::io::Result<()> {
        let current = dir.join(CURRENT);
        self.open_file(&current)?;
        let (tail, complete) = last_line(&current)?;
        self.prev = match tail {
            None => match rotated_files(dir)?.last() {
                Some(last) => match last_line(last)?.0.and_then(|l| hash_of(&l)) {
                    Some(h) => h,
                    None => GENESIS.into(),
                },
                None => GENESIS.into(),
            },
            Some(line) => {
                match hash_of(&line).filter(|_| complete) {
                    Some(h) => h,
                    None => {
                        // A line cut short: end it and record the break.
                        let before = previous_complete_line(&current)?
                            .and_then(|l| hash_of(&l))
                            .unwrap_or_else(|| GENESIS.into());
                        let mut marker = Event {
                            kind: "ChainResume".into(),
                            api_version: "rampart.dev/v1".into(),
                            stage_timestamp: micro_timestamp(jiff::Timestamp::now()),
                            ..Default::default()
                        };
                        marker.request_received_timestamp = marker.stage_timestamp.clone();
                        marker.annotations.insert(
                            "rampart.dev/broken-tail-sha256".into(),
                            hex(&Sha256::digest(&line)),
                        );
                        marker.annotations.insert(
                            "rampart.dev/broken-tail-bytes".into(),
                            line.len().to_string(),
                        );
                        let mut out = if complete { Vec::new() } else { b"\n".to_vec() };
                        out.extend(marker.seal(&before));
                        out.push(b'\n');
                        let file = self
                            .file
                            .as_mut()
                            .ok_or_else(|| std::io::Error::other("closed"))?;
                        file.write_all(&out)?;
                        self.size += out.len() as u64;
                        tracing::warn!("the audit log ended with a partial line; recorded a ChainResume marker");
                        marker.hash.unwrap_or_default()
                    }
                }
            }
        };
        Ok(())
    }
}

/// The hash of a complete, valid line.
fn hash_of(line: &[u8]) -> Option<String> {
    let e: Event = serde_json::from_slice(line).ok()?;
    e.hash
}

fn read_tail(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// The file's last line (without its newline) and whether it ended with one.
fn last_line(path: &Path) -> std::io::Result<(Option<Vec<u8>>, bool)> {
    let buf = read_tail(path)?;
    if buf.is_empty() {
        return Ok((None, true));
    }
    let complete = buf.ends_with(b"\n");
    let body = if complete {
        &buf[..buf.len() - 1]
    } else {
        &buf[..]
    };
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    Ok((Some(body[start..].to_vec()), complete))
}

/// The last line that ends with a newline and is valid, before a broken tail.
fn previous_complete_line(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let buf = read_tail(path)?;
    let mut lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
    lines.pop(); // the broken tail (or the empty piece after a final newline)
    Ok(lines
        .into_iter()
        .rev()
        .find(|l| hash_of(l).is_some())
        .map(|l| l.to_vec()))
}

/// Rotated files, oldest first.
pub fn rotated_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".log"))
        })
        .collect();
    out.sort();
    Ok(out)
}
