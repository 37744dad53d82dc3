//! The audit sink: `DIR/audit.log` (0600, in a 0700 directory), rotated by size to
//! `audit-<RFC 3339 time with ':' as '-'>.log` (so names sort in chain order). The chain
//! continues across files and restarts.
//!
//! History is never deleted by default. Pruning needs the operator to opt in
//! (`max_backups` > 0) *and* the files to have been shipped: only rotated files whose names
//! sort at or before the one named in `DIR/audit.shipped` (written by whatever ships the log
//! away) are removed, oldest first, down to `max_backups`. Unshipped history is kept even
//! past the limit. An optional disk budget (`max_total_size`, all files together) fails
//! closed instead of deleting: once reached, [`Sink::admits`] refuses mutations (the
//! request path answers 503 before serving them) while reads go on being served and logged
//! until the budget plus an eighth (at least 64 KiB) is used, then they are refused too.
//! Requests from strangers (no authenticated identity) are aggregated (`flood`), so they
//! cannot use up the budget.
//!
//! Durability: each line is one `write(2)` of the whole line, done before the response is
//! returned, so it survives a crash of the process. Against a crash of the machine, the file
//! is `fdatasync`ed every `sync_interval` when something was written (a background thread,
//! outside the writers' lock: `--audit-log-sync-interval`, default 1 s), before each rotation
//! and at shutdown; with an interval of 0 every line is synced before its response. A
//! machine crash therefore loses at most the last interval's lines, and a torn last line is
//! covered by the crash-recovery marker below.
//!
//! Space: the sink keeps a reserve of preallocated blocks beyond the end of `audit.log`
//! (`fallocate(FALLOC_FL_KEEP_SIZE)`: the file's size is unchanged, so readers and `verify`
//! see nothing of it), of a quarter of the rotation size clamped to 64 KiB..4 MiB, topped up
//! by [`Sink::writable`] whenever less than half of it is left. When the disk is full the
//! top-up fails and `writable` answers no, before the request is served; lines land in blocks
//! allocated earlier, so a full disk cannot fail the write of a request already admitted
//! (unless the lines of the requests in flight together outgrow half the reserve). Rotation
//! truncates the old file's unused reserve away before the new file reserves its own.
//!
//! Fail closed: a failed write marks the sink unhealthy and drops the file; a reserve that
//! cannot be topped up marks it unhealthy but keeps the file, so requests admitted earlier
//! still write their lines into what is left of the reserve. While unhealthy,
//! [`Sink::writable`] (checked before a request is served) retries opening at most every
//! 500 ms and otherwise says no, so the request path answers 503 before anything changes.
//! `writable` also stats `audit.log`, so a moved or removed log is caught before serving; a
//! write that fails later (disk full) turns that request's response into the 503, but a
//! mutation it made stays applied (its line may be partial: see crash recovery).
//! The directory is only created at start: a directory removed later stays a failure (a new,
//! empty chain would silently hide the old one). Each write also checks that `audit.log` is
//! still the file it holds open, so a moved or deleted log fails instead of writing to a
//! dangling inode.
//!
//! A panic while the writers' lock is held is recovered like a crash (see `Sink::lock`): the
//! file is reopened from the disk, so one panic costs at most that request's line.
//!
//! Crash recovery: on open, a last line without its newline (a write cut short) is ended
//! with a newline and followed by a `ChainResume` line whose `prevHash` is the hash of the
//! last complete line and whose annotations record the SHA-256 and length of the broken tail;
//! `verify` accepts a broken line only when such a marker follows it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::event::{hex, micro_timestamp, Event, GENESIS};
use super::flood::{Flood, Verdict};
use super::policy::Policy;

pub const CURRENT: &str = "audit.log";
/// Names the newest rotated file that has been shipped (copied elsewhere): only files up
/// to it may be pruned.
pub const SHIPPED: &str = "audit.shipped";
/// Extra room reads get past the budget (see the module docs), at least this much.
const READ_SLACK_MIN: u64 = 64 << 10;
/// How often a sink over its budget re-counts the directory (a shipper may have removed
/// files), and how often the flood summaries are checked.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// The reserve's bounds (see the module docs).
const RESERVE_MIN: u64 = 64 << 10;
const RESERVE_MAX: u64 = 4 << 20;
/// How long the write after `writable` trusts its check that `audit.log` is the open file.
const RECHECK_EVERY: Duration = Duration::from_millis(10);
/// How far back from the end the last complete line is looked for.
const TAIL_WINDOW: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub max_size: u64,
    /// Rotated files to keep once they are shipped; 0 (the default) never prunes.
    pub max_backups: usize,
    /// Bytes all audit files together may use before mutations are refused; 0 = no budget
    /// (the disk's free space is the limit, guarded by the reserve).
    pub max_total_size: u64,
    pub policy: Policy,
    /// How often written lines are `fdatasync`ed; zero syncs every line before its response.
    pub sync_interval: Duration,
    /// The aggregation window for strangers' requests (see `flood`).
    pub flood_window: Duration,
}

impl Config {
    fn reserve(&self) -> u64 {
        (self.max_size / 4).clamp(RESERVE_MIN, RESERVE_MAX)
    }

    /// The most a request of this kind may find used (see the module docs).
    fn budget(&self, mutating: bool) -> u64 {
        if mutating {
            self.max_total_size
        } else {
            self.max_total_size + (self.max_total_size / 8).max(READ_SLACK_MIN)
        }
    }
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
    /// Lines were written since the last sync.
    dirty: AtomicBool,
    /// Completed syncs (observable by tests and metrics).
    syncs: AtomicU64,
    flood: Flood,
    /// The budget was found exhausted (logged once per episode).
    over_budget: AtomicBool,
}

struct Inner {
    file: Option<File>,
    ino: (u64, u64),
    /// End of the blocks preallocated for the open file (an offset >= `size`).
    allocated_to: u64,
    /// When `audit.log` was last seen to be the file held open (see `still_current`).
    checked_at: Option<Instant>,
    size: u64,
    /// Bytes in rotated files, as last counted (rotation, pruning, or a recount when over
    /// the budget).
    rotated_bytes: u64,
    counted_at: Option<Instant>,
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
            allocated_to: 0,
            checked_at: None,
            size: 0,
            rotated_bytes: 0,
            counted_at: None,
            prev: GENESIS.into(),
            last_try: None,
        };
        inner.reopen(&cfg.dir).map_err(open_err)?;
        inner.reserve(cfg.reserve()).map_err(open_err)?;
        inner.recount(&cfg.dir).map_err(open_err)?;
        Ok(Sink {
            flood: Flood::new(cfg.flood_window),
            cfg,
            inner: Mutex::new(inner),
            healthy: AtomicBool::new(true),
            dirty: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            over_budget: AtomicBool::new(false),
        })
    }

    /// A background thread, for as long as the sink lives: syncs written lines every
    /// `sync_interval` (unless every line is synced as it is written) and writes the
    /// summaries of strangers' requests when their window ends.
    pub fn start_syncer(self: &Arc<Self>) {
        let weak: Weak<Sink> = Arc::downgrade(self);
        let every = self.cfg.sync_interval;
        let tick = if every.is_zero() {
            RECOUNT_EVERY
        } else {
            every.min(RECOUNT_EVERY)
        };
        let spawned = std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || {
                let mut synced = Instant::now();
                loop {
                    // A dedicated thread that only ticks; no request ever waits on it.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(tick);
                    let Some(sink) = weak.upgrade() else { return };
                    sink.flush_floods(false);
                    if !every.is_zero() && synced.elapsed() >= every {
                        sink.sync();
                        synced = Instant::now();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the audit sync thread");
        }
    }

    /// Write the strangers' summaries that are due (all of them when `force`).
    fn flush_floods(&self, force: bool) {
        let due = self.flood.due(force);
        if !due.is_empty() {
            // A failure marks the sink unhealthy: requests are refused until it recovers.
            let _ = self.write(due);
        }
    }

    /// At shutdown: pending summaries written, everything synced.
    pub fn finish(&self) {
        self.flush_floods(true);
        self.sync();
    }

    /// `fdatasync` the current file if lines were written since the last sync. The file
    /// descriptor is duplicated under the lock and synced outside it, so writers never wait
    /// for the disk.
    pub fn sync(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let file = self.lock().file.as_ref().and_then(|f| f.try_clone().ok());
        if let Some(f) = file {
            match f.sync_data() {
                Ok(()) => {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.dirty.store(true, Ordering::Release);
                    tracing::error!(error = %e, "cannot sync the audit log");
                }
            }
        }
    }

    fn fail(&self, e: Error) -> Result<(), Error> {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(error = %e, "the audit log cannot be written: refusing requests");
        }
        let mut inner = self.lock();
        inner.file = None;
        inner.last_try = Some(Instant::now());
        Err(e)
    }

    /// How many syncs have completed.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub fn policy(&self) -> &Policy {
        &self.cfg.policy
    }

    /// The writers' lock. A panic while it was held (a bug in a writer, or the test hook)
    /// poisons it and leaves `Inner` unknown: a line may be half-written, `size` and `prev`
    /// may not match the file. Refusing every later request because of it would turn one
    /// panic into a 503 forever; trusting the state could break the chain. So the state is
    /// rebuilt from the disk by the next taker of the lock: `audit.log` is reopened and the
    /// chain resumed from its last complete line (a torn line gets its `ChainResume` marker),
    /// as after a crash; if that fails the sink is unhealthy and `writable` retries.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => {
                let mut inner = poisoned.into_inner();
                self.inner.clear_poison();
                tracing::error!("an audit writer panicked; reopening the log from disk");
                inner.file = None;
                // Rebuilt here, under the lock, before anyone else can write: a failed write
                // in between would hold recovery back for `RETRY_EVERY`.
                match inner
                    .reopen(&self.cfg.dir)
                    .and_then(|()| inner.reserve(self.cfg.reserve()))
                {
                    Ok(()) => tracing::info!("the audit log is writable again"),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reopen the audit log after a panic");
                        inner.file = None;
                        inner.last_try = None;
                        self.healthy.store(false, Ordering::Release);
                    }
                }
                inner
            }
        }
    }

    /// Whether a request may be served now (see the module docs).
    pub fn writable(&self) -> bool {
        let mut inner = self.lock();
        if self.healthy.load(Ordering::Acquire) {
            // One stat(2): a log moved or removed is refused before the request is served.
            if !inner.still_current(&self.cfg.dir, Duration::ZERO) {
                tracing::error!("the audit log was moved or removed: refusing requests");
                inner.file = None;
            } else if let Err(e) = inner.keep_reserve(self.cfg.reserve()) {
                // The file stays open: requests admitted before this one still write their
                // lines into what is left of the reserve (dropping it here made a create
                // that was already stored answer 503).
                tracing::error!(error = %e, "no space for the audit log: refusing requests");
            } else {
                return true;
            }
            self.healthy.store(false, Ordering::Release);
            inner.last_try = Some(Instant::now());
        }
        if inner.last_try.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return false;
        }
        inner.last_try = Some(Instant::now());
        if !self.cfg.dir.is_dir() {
            return false;
        }
        let reserve = self.cfg.reserve();
        // Still the open file (only space ran out): top its reserve up; else open again.
        let recovered = if inner.still_current(&self.cfg.dir, Duration::ZERO) {
            inner.reserve(reserve)
        } else {
            inner
                .reopen(&self.cfg.dir)
                .and_then(|()| inner.reserve(reserve))
        };
        match recovered {
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
    pub fn record(&self, event: Event) -> Result<(), Error> {
        self.write(vec![event])
    }

    /// Appends the line of a request nobody authenticated for (from `ip`): written in full,
    /// or counted into a summary line when it is part of a flood (see `flood`).
    pub fn record_stranger(&self, ip: std::net::IpAddr, event: Event) -> Result<(), Error> {
        let (mut lines, verdict) = self.flood.admit(ip, &event);
        if verdict == Verdict::Write {
            lines.push(event);
        }
        if lines.is_empty() {
            return Ok(());
        }
        self.write(lines)
    }

    fn write(&self, events: Vec<Event>) -> Result<(), Error> {
        let mut inner = self.lock();
        for mut event in events {
            #[cfg(feature = "test-hooks")]
            if crate::test_hooks::audit_panic_uri().is_some_and(|u| event.request_uri.contains(u)) {
                panic!(
                    "test hook RAMPART_TEST_AUDIT_PANIC_URI: panicking with the audit lock held"
                );
            }
            if let Err(e) = inner.append(&self.cfg, &mut event) {
                drop(inner);
                return self.fail(e);
            }
        }
        if !self.cfg.sync_interval.is_zero() {
            self.dirty.store(true, Ordering::Release);
            return Ok(());
        }
        // Synced before the response, under the lock, so lines reach the disk in order.
        if let Some(Err(e)) = inner.file.as_ref().map(|f| f.sync_data()) {
            drop(inner);
            return self.fail(Error::Write(e));
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a request may be served now: the log is writable (see [`Sink::writable`])
    /// and, with a budget, the files leave room for this kind of request (mutations stop at
    /// the budget, reads a little later; see the module docs).
    pub fn admits(&self, mutating: bool) -> bool {
        if !self.writable() {
            return false;
        }
        if self.cfg.max_total_size == 0 {
            return true;
        }
        let mut inner = self.lock();
        let limit = self.cfg.budget(mutating);
        let mut used = inner.rotated_bytes + inner.size;
        let counted_recently = inner
            .counted_at
            .is_some_and(|t| t.elapsed() < RECOUNT_EVERY);
        if used >= limit && !counted_recently {
            // Shipped files may have been removed since: count again before refusing.
            if let Err(e) = inner.recount(&self.cfg.dir) {
                tracing::debug!(error = %e, "cannot count the audit files");
            }
            used = inner.rotated_bytes + inner.size;
        }
        if used < limit {
            if used < self.cfg.budget(true) && self.over_budget.swap(false, Ordering::AcqRel) {
                tracing::info!("the audit log is within its budget again");
            }
            return true;
        }
        if !self.over_budget.swap(true, Ordering::AcqRel) {
            tracing::error!(
                used,
                budget = self.cfg.max_total_size,
                "the audit log has used its disk budget: refusing mutations until its files are shipped and removed"
            );
        }
        false
    }

    /// Bytes the audit files use now (rotated files as last counted, plus `audit.log`).
    pub fn used(&self) -> u64 {
        let inner = self.lock();
        inner.rotated_bytes + inner.size
    }
}

impl Inner {
    fn append(&mut self, cfg: &Config, event: &mut Event) -> Result<(), Error> {
        if self.file.is_none() {
            return Err(Error::Gone);
        }
        if !self.still_current(&cfg.dir, RECHECK_EVERY) {
            return Err(Error::Gone);
        }
        let mut line = event.seal(&self.prev);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > cfg.max_size {
            self.rotate(cfg, line.len() as u64).map_err(Error::Write)?;
        }
        if self.size + line.len() as u64 > self.allocated_to {
            // A line bigger than what is left of the reserve: allocate for it first, so a
            // full disk fails here, before anything of the line is written.
            self.reserve(line.len() as u64 + cfg.reserve())
                .map_err(Error::Write)?;
        }
        let file = self.file.as_mut().ok_or(Error::Gone)?;
        file.write_all(&line).map_err(Error::Write)?;
        self.size += line.len() as u64;
        self.prev = event.hash.clone().unwrap_or_default();
        Ok(())
    }

    /// Preallocate `len` bytes from the end of the file (already allocated blocks cost
    /// nothing), keeping the file's size.
    fn reserve(&mut self, len: u64) -> std::io::Result<()> {
        use nix::fcntl::{fallocate, FallocateFlags};
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("closed"))?;
        let (Ok(offset), Ok(len_i)) = (i64::try_from(self.size), i64::try_from(len)) else {
            return Err(std::io::Error::other("audit log offset out of range"));
        };
        fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, len_i)
            .map_err(std::io::Error::from)?;
        self.allocated_to = self.size + len;
        Ok(())
    }

    /// Top the reserve up when less than half of it is left.
    fn keep_reserve(&mut self, reserve: u64) -> std::io::Result<()> {
        if self.allocated_to.saturating_sub(self.size) >= reserve / 2 {
            return Ok(());
        }
        self.reserve(reserve)
    }

    /// Whether `audit.log` is still the file held open, trusting a check younger than
    /// `max_age`. `writable` always stats (a moved log is refused before serving); the write
    /// that follows trusts that check for [`RECHECK_EVERY`]: a stat costs several microseconds
    /// here, and a log moved in between is still a real file holding the line.
    fn still_current(&mut self, dir: &Path, max_age: Duration) -> bool {
        if self.file.is_none() {
            return false;
        }
        if self.checked_at.is_some_and(|t| t.elapsed() < max_age) {
            return true;
        }
        let ok = std::fs::metadata(dir.join(CURRENT)).is_ok_and(|m| (m.dev(), m.ino()) == self.ino);
        self.checked_at = ok.then(Instant::now);
        ok
    }

    fn rotate(&mut self, cfg: &Config, line_len: u64) -> std::io::Result<()> {
        let stamp = micro_timestamp(jiff::Timestamp::now()).replace(':', "-");
        let current = cfg.dir.join(CURRENT);
        // The new file starts with what the old one gives back, which `writable` kept at
        // half the reserve or more: on a full disk the rotation itself then cannot fail, and
        // the next `writable` refuses the following request when it cannot top up.
        let freed = self.allocated_to.saturating_sub(self.size);
        if let Some(f) = &self.file {
            // The rotated file is final: on disk, and without the reserve beyond its end.
            f.set_len(self.size)?;
            f.sync_data()?;
        }
        std::fs::rename(&current, cfg.dir.join(format!("audit-{stamp}.log")))?;
        self.open_file(&current)?;
        self.reserve(freed.clamp(line_len, cfg.reserve().max(line_len)))?;
        if cfg.max_backups > 0 {
            prune(&cfg.dir, cfg.max_backups)?;
        }
        self.recount(&cfg.dir)
    }

    /// Count the bytes of the rotated files.
    fn recount(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut total = 0;
        for f in rotated_files(dir)? {
            total += std::fs::metadata(&f).map_or(0, |m| m.len());
        }
        self.rotated_bytes = total;
        self.counted_at = Some(Instant::now());
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
        self.allocated_to = self.size;
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

/// Remove the oldest rotated files beyond `keep`, but only those already shipped (named at
/// or before the name in `SHIPPED`); the first unshipped file stops the pruning.
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let shipped = match std::fs::read_to_string(dir.join(SHIPPED)) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let rotated = rotated_files(dir)?;
    let excess = rotated.len().saturating_sub(keep);
    for old in &rotated[..excess] {
        let name = old.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if shipped.is_empty() || name > shipped.as_str() {
            break;
        }
        std::fs::remove_file(old)?;
    }
    Ok(())
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

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests may sleep
mod tests {
    use super::*;

    fn sink(dir: &Path, max_size: u64, sync_interval: Duration) -> Sink {
        Sink::open(Config {
            dir: dir.to_path_buf(),
            max_size,
            max_backups: 0,
            max_total_size: 0,
            policy: Policy::default_policy(),
            sync_interval,
            flood_window: Duration::from_secs(10),
        })
        .unwrap()
    }

    fn event() -> Event {
        Event {
            kind: "Event".into(),
            verb: "get".into(),
            ..Default::default()
        }
    }

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn a_panic_holding_the_lock_is_recovered_from_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sink(tmp.path(), 1 << 20, Duration::from_secs(60));
        s.record(event()).unwrap();
        // A writer that dies mid-line: half a line on disk, the lock poisoned.
        let died = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut inner = s.inner.lock().unwrap();
                    let f = inner.file.as_mut().unwrap();
                    f.write_all(b"{\"kind\":\"Event\",\"half").unwrap();
                    panic!("writer died");
                })
                .join()
        });
        assert!(died.is_err());
        assert!(s.inner.is_poisoned());
        // Requests are served again (not 503 forever), and the chain stays verifiable: the
        // torn line is closed by a ChainResume marker as after a crash.
        assert!(s.writable());
        s.record(event()).unwrap();
        assert!(!s.inner.is_poisoned());
        let text = std::fs::read_to_string(tmp.path().join(CURRENT)).unwrap();
        assert!(text.contains("ChainResume"), "{text}");
        let v = super::super::verify(tmp.path()).unwrap();
        assert_eq!(v.lines, 3, "{text}"); // the torn tail is skipped, its marker counted
    }

    #[test]
    fn reserve_is_preallocated_without_growing_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sink(tmp.path(), 1 << 20, Duration::from_secs(60));
        let log = tmp.path().join(CURRENT);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert!(allocated(&log) >= 256 << 10, "{}", allocated(&log));
        for _ in 0..5 {
            assert!(s.writable());
            s.record(event()).unwrap();
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert_eq!(std::fs::metadata(&log).unwrap().len() as usize, text.len());
    }

    #[test]
    fn rotated_files_give_their_reserve_back() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sink(tmp.path(), 2000, Duration::from_secs(60));
        for _ in 0..20 {
            assert!(s.writable());
            s.record(event()).unwrap();
        }
        let rotated = rotated_files(tmp.path()).unwrap();
        assert!(rotated.len() >= 2, "{rotated:?}");
        for f in rotated {
            assert!(allocated(&f) < RESERVE_MIN, "{f:?} keeps {}", allocated(&f));
        }
    }

    fn sink_with(dir: &Path, max_size: u64, max_backups: usize, max_total_size: u64) -> Sink {
        Sink::open(Config {
            dir: dir.to_path_buf(),
            max_size,
            max_backups,
            max_total_size,
            policy: Policy::default_policy(),
            sync_interval: Duration::from_secs(60),
            flood_window: Duration::from_secs(10),
        })
        .unwrap()
    }

    #[test]
    fn pruning_needs_the_opt_in_and_a_shipped_mark() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sink_with(tmp.path(), 2000, 1, 0);
        for _ in 0..40 {
            s.record(event()).unwrap();
        }
        let rotated = rotated_files(tmp.path()).unwrap();
        assert!(
            rotated.len() >= 4,
            "nothing pruned without a mark: {rotated:?}"
        );
        let mark = rotated[1]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        std::fs::write(tmp.path().join(SHIPPED), &mark).unwrap();
        // Rotations within one microsecond would share a name; keep them apart.
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..20 {
            s.record(event()).unwrap();
        }
        let now = rotated_files(tmp.path()).unwrap();
        assert!(!now.contains(&rotated[0]) && !now.contains(&rotated[1]));
        for f in &rotated[2..] {
            assert!(now.contains(f), "{f:?} was not shipped but was pruned");
        }
    }

    #[test]
    fn the_budget_stops_mutations_first_then_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sink_with(tmp.path(), 1 << 20, 0, 8 << 10);
        while s.used() < 8 << 10 {
            assert!(s.admits(true));
            s.record(event()).unwrap();
        }
        assert!(!s.admits(true), "a mutation past the budget");
        assert!(s.admits(false), "reads go on for a while");
        while s.used() < (8 << 10) + READ_SLACK_MIN {
            s.record(event()).unwrap();
        }
        assert!(!s.admits(false));
    }

    #[test]
    fn lines_are_synced_every_line_or_by_the_syncer() {
        let tmp = tempfile::tempdir().unwrap();
        let every = sink(tmp.path(), 1 << 20, Duration::ZERO);
        every.record(event()).unwrap();
        every.record(event()).unwrap();
        assert_eq!(every.syncs(), 2);
        drop(every);

        let tmp = tempfile::tempdir().unwrap();
        let s = Arc::new(sink(tmp.path(), 1 << 20, Duration::from_millis(20)));
        s.start_syncer();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.syncs(), 0, "nothing written, nothing to sync");
        s.record(event()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.syncs() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(s.syncs(), 1);
    }
}
