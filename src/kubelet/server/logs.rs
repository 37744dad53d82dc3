//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's CRI log file
//! (`<log root>/<ns>_<pod>_<uid>/<container>/<attempt>.log`) turned back into its output, with
//! upstream's `PodLogOptions`: `follow`, `previous`, `sinceSeconds`, `sinceTime`, `tailLines`,
//! `timestamps`, `limitBytes` (and `stream=Stdout|Stderr`). As upstream's kubelet
//! (`pkg/kubelet/kuberuntime/logs`), only the current file of the attempt is read (not the
//! rotated ones); a followed log continues into the new file after a rotation and ends when
//! the container is no longer running.
//!
//! The file is read on a blocking thread and streamed through a small bounded channel (never
//! a whole log in memory, except the last `tailLines` lines). Following waits on inotify for
//! the file to grow or be rotated, and checks the container's state with its shim once a
//! second while the file is quiet.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::kubelet::runtime::{client as shim, shim::Request};

/// The query of a log request, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Only lines at or after this time.
    pub since: Option<jiff::Timestamp>,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// `Some("stdout")` or `Some("stderr")` for one stream only.
    pub stream: Option<&'static str>,
}

impl Options {
    /// Parse the query as upstream's kubelet does; errors are the 400 message.
    pub fn parse(query: Option<&str>) -> Result<Options, String> {
        let mut o = Options::default();
        let mut since_seconds: Option<i64> = None;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let flag = || matches!(v.as_ref(), "true" | "1");
            let num = |what: &str| {
                v.parse::<i64>()
                    .map_err(|_| format!("{what}: invalid value {v:?}: must be an integer"))
            };
            match k.as_ref() {
                "follow" => o.follow = flag(),
                "previous" => o.previous = flag(),
                "timestamps" => o.timestamps = flag(),
                "tailLines" => {
                    let n = num("tailLines")?;
                    if n < 0 {
                        return Err("tailLines: Invalid value: must be greater than or equal to 0".into());
                    }
                    o.tail_lines = Some(n as u64);
                }
                "limitBytes" => {
                    let n = num("limitBytes")?;
                    if n < 1 {
                        return Err("limitBytes: Invalid value: must be greater than 0".into());
                    }
                    o.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n = num("sinceSeconds")?;
                    if n < 1 {
                        return Err("sinceSeconds: Invalid value: must be greater than 0".into());
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t = v.parse::<jiff::Timestamp>().map_err(|e| {
                        format!("sinceTime: invalid value {v:?}: not an RFC 3339 time: {e}")
                    })?;
                    o.since = Some(t);
                }
                "stream" => {
                    o.stream = match v.as_ref() {
                        "Stdout" => Some("stdout"),
                        "Stderr" => Some("stderr"),
                        "All" | "" => None,
                        other => {
                            return Err(format!(
                                "stream: Unsupported value: {other:?}: supported values: \"All\", \"Stderr\", \"Stdout\""
                            ))
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(s) = since_seconds {
            if o.since.is_some() {
                return Err("at most one of sinceTime or sinceSeconds may be specified".into());
            }
            o.since = jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(s))
                .ok();
        }
        Ok(o)
    }
}

/// Where a container's logs are and how to tell whether it still runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// `<log root>/<ns>_<pod>_<uid>/<container>`.
    pub dir: PathBuf,
    /// The pod's shim directory (`<data dir>/pods/<uid>`).
    pub shim_dir: PathBuf,
    pub container: String,
}

/// The attempts whose log files exist, ascending.
pub fn attempts(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse::<u32>()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// One CRI line: (timestamp, stream, partial, content).
fn parse_line(line: &[u8]) -> Option<(&str, &str, bool, &[u8])> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    let content = content.strip_suffix(b"\n").unwrap_or(content);
    Some((ts, stream, tag == b"P", content))
}

/// Turns CRI lines into output bytes, applying the filters and the byte limit.
struct Writer {
    opts: Options,
    written: u64,
    /// The previous line was partial: the next one continues it (no timestamp prefix).
    continuing: bool,
}

impl Writer {
    /// The output for one CRI line; `None` once the byte limit is reached.
    fn render(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        let Some((ts, stream, partial, content)) = parse_line(line) else {
            return Some(Vec::new());
        };
        if self.opts.stream.is_some_and(|s| s != stream) {
            return Some(Vec::new());
        }
        let t = ts.parse::<jiff::Timestamp>().ok();
        if let (Some(since), Some(t)) = (self.opts.since, t) {
            if t < since {
                return Some(Vec::new());
            }
        }
        let mut out = Vec::with_capacity(content.len() + 40);
        if self.opts.timestamps && !self.continuing {
            match t {
                Some(t) => out.extend_from_slice(format!("{t} ").as_bytes()),
                None => out.extend_from_slice(format!("{ts} ").as_bytes()),
            }
        }
        out.extend_from_slice(content);
        if !partial {
            out.push(b'\n');
        }
        self.continuing = partial;
        if let Some(limit) = self.opts.limit_bytes {
            let left = limit.saturating_sub(self.written);
            if left == 0 {
                return None;
            }
            out.truncate(left.min(out.len() as u64) as usize);
        }
        self.written += out.len() as u64;
        Some(out)
    }

    fn done(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }
}

/// Start streaming; the receiver yields output chunks until the end (or an error line).
pub fn stream(target: Target, attempt: u32, opts: Options) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let path = target.dir.join(format!("{attempt}.log"));
        if let Err(e) = pump(&target, attempt, &path, opts, &tx) {
            tracing::debug!(path = %path.display(), error = %e, "log stream ended");
        }
    });
    rx
}

fn send(tx: &mpsc::Sender<Bytes>, buf: &mut Vec<u8>) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    tx.blocking_send(Bytes::from(std::mem::take(buf)))
        .map_err(|_| std::io::Error::other("the client went away"))
}

fn pump(
    target: &Target,
    attempt: u32,
    path: &Path,
    opts: Options,
    tx: &mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let follow = opts.follow;
    let mut w = Writer {
        opts,
        written: 0,
        continuing: false,
    };
    let file = std::fs::File::open(path)?;
    // Watch before reading anything; a rotation between the open and the watch is caught by
    // comparing inodes (the watch would then be on the new file: drain the old one, reopen).
    let watch = if follow {
        Inotify::new(path).ok()
    } else {
        None
    };
    let mut reopen = {
        use std::os::unix::fs::MetadataExt;
        let opened = file.metadata().map(|m| m.ino()).ok();
        let now = std::fs::metadata(path).map(|m| m.ino()).ok();
        follow && opened != now
    };
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    // tailLines: keep only the last N lines of what the file holds now.
    if let Some(n) = w.opts.tail_lines {
        let mut last: VecDeque<Vec<u8>> = VecDeque::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if n == 0 {
                continue;
            }
            if last.len() as u64 == n {
                last.pop_front();
            }
            last.push_back(line);
        }
        for line in last {
            match w.render(&line) {
                Some(b) => out.extend_from_slice(&b),
                None => return send(tx, &mut out),
            }
        }
        send(tx, &mut out)?;
    }
    let mut pending: Vec<u8> = Vec::new();
    // `reopen` is set when the file was rotated: the old one is drained first, then the new
    // one opened.
    loop {
        // Read every whole line available now.
        loop {
            let n = reader.read_until(b'\n', &mut pending)?;
            if n == 0 || !pending.ends_with(b"\n") {
                break;
            }
            let line = std::mem::take(&mut pending);
            match w.render(&line) {
                Some(b) => out.extend_from_slice(&b),
                None => return send(tx, &mut out),
            }
            if out.len() >= 32 * 1024 {
                send(tx, &mut out)?;
            }
        }
        send(tx, &mut out)?;
        if !follow || w.done() {
            return Ok(());
        }
        let Some(watch) = &watch else {
            return Ok(());
        };
        if reopen {
            // The shim renames, then creates the new file at once; until it exists, wait.
            if let Ok(f) = std::fs::File::open(path) {
                reader = BufReader::new(f);
                pending.clear();
                watch.rewatch(path)?;
                reopen = false;
                continue;
            }
        }
        // Quiet file: wait for a change, or a second, then decide whether to go on.
        match watch.wait(Duration::from_secs(1))? {
            // Drain what the old file still holds (next turn), then continue in the new one.
            Change::Rotated => reopen = true,
            Change::Grew => {}
            Change::Quiet => {
                // A rotation whose new file appeared after our last try: read it first.
                if reopen && path.exists() {
                    continue;
                }
                if tx.is_closed() || !running(target, attempt) {
                    // A last look: lines written just before the exit.
                    let mut rest = Vec::new();
                    reader.read_to_end(&mut rest)?;
                    pending.extend_from_slice(&rest);
                    for line in pending.split_inclusive(|b| *b == b'\n') {
                        match w.render(line) {
                            Some(b) => out.extend_from_slice(&b),
                            None => break,
                        }
                    }
                    return send(tx, &mut out);
                }
            }
        }
    }
}

/// Whether the container's attempt still runs (asked of the pod's shim).
fn running(target: &Target, attempt: u32) -> bool {
    let id = format!("{}-{attempt}", target.container);
    match shim::call_blocking(&target.shim_dir, &Request::State) {
        Ok(r) => r.containers.iter().any(|c| c.id == id && c.running),
        Err(_) => false,
    }
}

enum Change {
    Grew,
    Rotated,
    Quiet,
}

/// An inotify watch on one file (modified, moved away, deleted).
struct Inotify {
    fd: OwnedFd,
    /// The current watch (the previous file's is removed, so its deletion by pruning is not
    /// mistaken for another rotation).
    wd: std::cell::Cell<Option<i32>>,
}

// inotify(7) is not among the `nix` features this crate builds.
#[allow(unsafe_code)]
impl Inotify {
    fn new(path: &Path) -> std::io::Result<Inotify> {
        // SAFETY: inotify_init1(2) returns a new descriptor we take ownership of.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let me = Inotify {
            // SAFETY: `raw` is a fresh descriptor owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            wd: std::cell::Cell::new(None),
        };
        me.rewatch(path)?;
        Ok(me)
    }

    fn rewatch(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c =
            std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        let mask = libc::IN_MODIFY | libc::IN_MOVE_SELF | libc::IN_DELETE_SELF;
        // SAFETY: a valid NUL-terminated path and our own inotify descriptor.
        let wd = unsafe {
            libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&self.fd), c.as_ptr(), mask)
        };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(old) = self.wd.replace(Some(wd)).filter(|old| *old != wd) {
            // SAFETY: inotify_rm_watch(2) on our own descriptor and a watch it returned.
            unsafe { libc::inotify_rm_watch(std::os::fd::AsRawFd::as_raw_fd(&self.fd), old) };
        }
        Ok(())
    }

    fn wait(&self, timeout: Duration) -> std::io::Result<Change> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(Change::Quiet),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Change::Quiet),
            Err(e) => return Err(e.into()),
        }
        let mut buf = [0u8; 4096];
        let mut change = Change::Grew;
        loop {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => break,
                Ok(n) => {
                    // struct inotify_event: wd (i32), mask (u32), cookie, len, name[len].
                    let mut i = 0;
                    while i + 16 <= n {
                        let mask =
                            u32::from_ne_bytes([buf[i + 4], buf[i + 5], buf[i + 6], buf[i + 7]]);
                        let len = u32::from_ne_bytes([
                            buf[i + 12],
                            buf[i + 13],
                            buf[i + 14],
                            buf[i + 15],
                        ]) as usize;
                        if mask & (libc::IN_MOVE_SELF | libc::IN_DELETE_SELF) != 0 {
                            change = Change::Rotated;
                        }
                        i += 16 + len;
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(query: &str) -> Writer {
        Writer {
            opts: Options::parse(Some(query)).unwrap(),
            written: 0,
            continuing: false,
        }
    }

    #[test]
    fn options() {
        let o =
            Options::parse(Some("follow=true&tailLines=3&timestamps=true&limitBytes=9")).unwrap();
        assert!(o.follow && o.timestamps);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.limit_bytes, Some(9));
        assert!(Options::parse(Some("tailLines=-1")).is_err());
        assert!(Options::parse(Some("limitBytes=0")).is_err());
        assert!(Options::parse(Some("sinceSeconds=0")).is_err());
        assert!(Options::parse(Some("sinceTime=yesterday")).is_err());
        assert!(Options::parse(Some("stream=Both")).is_err());
        assert!(Options::parse(Some("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z")).is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn follow_continues_across_a_rotation() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let line = |t: &str| format!("2026-01-02T03:04:05.000000000Z stdout F {t}\n");
        std::fs::write(&path, line("one") + &line("two")).unwrap();
        let target = Target {
            dir: dir.path().to_path_buf(),
            // No shim: once the file is quiet for a second, the container counts as exited.
            shim_dir: dir.path().join("no-shim"),
            container: "c".into(),
        };
        let opts = Options::parse(Some("follow=true&tailLines=1")).unwrap();
        let mut rx = stream(target, 0, opts);
        let mut got = Vec::new();
        got.extend_from_slice(&rx.recv().await.unwrap());
        assert_eq!(got, b"two\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(line("three").as_bytes()).unwrap();
        std::fs::rename(&path, dir.path().join("0.log.20260102-030405")).unwrap();
        std::fs::write(&path, line("four")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(b)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            got.extend_from_slice(&b);
        }
        assert_eq!(String::from_utf8_lossy(&got), "two\nthree\nfour\n");
    }

    #[test]
    fn render_lines() {
        let mut w = writer("timestamps=true");
        let out = w
            .render(b"2026-01-02T03:04:05.500000000Z stdout P hel\n")
            .unwrap();
        assert_eq!(out, b"2026-01-02T03:04:05.5Z hel");
        let out = w
            .render(b"2026-01-02T03:04:06.000000000Z stdout F lo\n")
            .unwrap();
        assert_eq!(out, b"lo\n", "a continued line has no second timestamp");
        let mut w = writer("stream=Stderr&limitBytes=4");
        assert_eq!(
            w.render(b"2026-01-02T03:04:05Z stdout F out\n").unwrap(),
            b""
        );
        assert_eq!(
            w.render(b"2026-01-02T03:04:05Z stderr F error\n").unwrap(),
            b"erro"
        );
        assert!(w.render(b"2026-01-02T03:04:05Z stderr F more\n").is_none());
        let mut w = writer("sinceTime=2026-01-02T03:04:06Z");
        assert_eq!(
            w.render(b"2026-01-02T03:04:05Z stdout F old\n").unwrap(),
            b""
        );
        assert_eq!(
            w.render(b"2026-01-02T03:04:07Z stdout F new\n").unwrap(),
            b"new\n"
        );
    }
}
