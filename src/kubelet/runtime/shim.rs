//! The per-pod shim (`rampart __shim`, hidden): what containerd-shim + runc are for k3s.
//!
//! Started by the agent from a sealed copy of the binary, it detaches (`setsid`, its parent
//! exits once the socket is ready, so it is re-parented away from the agent), creates the
//! pod's network, IPC and UTS namespaces by `unshare`ing itself (it holds them: no pause
//! container) and brings loopback up. Then one single-threaded `poll(2)` loop serves:
//! - requests on `DIR/shim.sock` (0600, one JSON line in, one out): run, kill, state,
//!   remove, shutdown, exec, execWait, execKill;
//! - `SIGCHLD` (signalfd): reap, record exit code/signal, finish time, OOM kill;
//! - each container's stdout/stderr pipes (or its pty master, `terminal`), written to its
//!   CRI log file and copied to the attach sessions of the container;
//! - attach sessions (`attach`, what `kubectl attach`/`run -i` reach): the answer carries a
//!   dup of the container's stdin (the pipe's write end or the pty master) when asked, then
//!   the connection stays open and gets the output as `[stream][len u32 BE][bytes]` records
//!   (1 stdout, 2 stderr) until the container's output ends. A reader that falls 4 MiB
//!   behind is dropped rather than stalling the log. With `stdinOnce` the shim gives its own
//!   stdin end away with the first attach that takes it, so the container reads EOF once
//!   that session ends (CRI `stdin_once`); later attaches get no stdin. A pty master is no
//!   pipe: its EOF for a `tty: true` container is a hang-up, so the agent says when that
//!   session ended (`closeStdin`) and the shim types VEOF, then closes the master after
//!   `HANG_UP_GRACE` (containerd closes it at once, dropping input not yet read).
//!
//! It outlives the agent: the agent reconnects to the socket after a restart and finds its
//! containers with their PIDs, attempts (annotations) and times. Being single-threaded is
//! what makes `clone(2)` of containers from it safe.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use serde::{Deserialize, Serialize};

use super::container;
use super::logs;
use super::spec::Spec;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    Run {
        id: String,
        spec: Box<Spec>,
    },
    Kill {
        id: String,
        signal: i32,
    },
    State,
    Remove {
        id: String,
    },
    Shutdown,
    /// Start a process in container `id`; its descriptors come with the answer
    /// (`SCM_RIGHTS`, in `exec::Started` order).
    Exec {
        id: String,
        process: super::exec::Process,
    },
    /// Answer once exec process `pid` has exited (at once if it already has).
    ExecWait {
        pid: i32,
    },
    /// Signal exec process `pid` (only one this shim started and has not reaped: a timed-out
    /// exec probe or hook, as CRI's `ExecSync` timeout kills its process).
    ExecKill {
        pid: i32,
        signal: i32,
    },
    /// Attach to container `id` (see the module docs); `stdin`: hand over its stdin.
    Attach {
        id: String,
        #[serde(default)]
        stdin: bool,
    },
    /// The attach session that took container `id`'s stdin ended. For a `terminal` +
    /// `stdinOnce` container the shim then types the terminal's end-of-file character
    /// (VEOF, queued behind the input already sent, so a shell runs that input and then
    /// exits) and, if the container is still running `HANG_UP_GRACE` later, closes the pty
    /// master (the terminal hangs up, what containerd does at once when its stdin copy ends).
    /// For any other container it changes nothing (a pipe's EOF came with the agent closing
    /// its end).
    CloseStdin {
        id: String,
    },
}

/// An exec process as the shim reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecState {
    pub pid: i32,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub containers: Vec<ContainerState>,
    /// The shim's own PID (its namespaces are the pod's: `/proc/<pid>/ns/net`).
    #[serde(default)]
    pub shim_pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub id: String,
    pub pid: i32,
    pub running: bool,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The shim's command line (hidden subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct ShimArgs {
    /// The pod's state directory (socket, container directories, shim.log).
    #[arg(long)]
    pub dir: PathBuf,
    /// The pod's hostname.
    #[arg(long)]
    pub hostname: String,
    /// Stay in the host's network namespace (hostNetwork pods).
    #[arg(long)]
    pub host_network: bool,
}

struct Ctr {
    state: ContainerState,
    stdout: Option<(OwnedFd, logs::Stream)>,
    stderr: Option<(OwnedFd, logs::Stream)>,
    /// The container's stdin for attaches (`None` without `stdin`, or once a `stdinOnce`
    /// attach took it).
    stdin: Option<OwnedFd>,
    attached: Vec<Attached>,
    log: Option<logs::LogFile>,
    cgroup_path: Option<String>,
    cgroup_dirs: Vec<PathBuf>,
    /// Kept for processes exec'd into the container later.
    spec: Box<Spec>,
    /// When the terminal is hung up (`tty` + `stdinOnce`, after its stdin closed).
    hang_up_at: Option<std::time::Instant>,
}

/// How long a `tty` + `stdinOnce` container has to exit on its own (on the VEOF typed into
/// its terminal) once its stdin closed, before its terminal is hung up.
const HANG_UP_GRACE: Duration = Duration::from_secs(5);

/// Entry point of `rampart __shim`: detach, then serve until shutdown. Returns only in the
/// first process (the one the agent waits for), with the outcome of the start-up.
pub fn main(mut args: ShimArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    // Absolute: overlayfs options and the socket path must not depend on a working directory.
    args.dir =
        std::fs::canonicalize(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: `rampart __shim` is started single-threaded (no tokio runtime exists in this
    // process), so the forked child inherits no lock held by another thread.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(ready_w);
            let mut msg = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(ready_r), &mut msg);
            if msg == "ok" {
                Ok(())
            } else if msg.is_empty() {
                Err("the shim died during start-up".into())
            } else {
                Err(msg)
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            let mut ready = std::fs::File::from(ready_w);
            let code = match setup(&args) {
                Ok((listener, sigfd)) => {
                    let _ = ready.write_all(b"ok");
                    drop(ready);
                    serve(&args, listener, sigfd);
                    0
                }
                Err(e) => {
                    let _ = ready.write_all(e.as_bytes());
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

fn setup(args: &ShimArgs) -> Result<(UnixListener, SignalFd), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.dir.join("shim.log"))
        .map_err(|e| format!("shim.log: {e}"))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: dup2(2) onto our own standard descriptors.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    let mut flags = nix::sched::CloneFlags::CLONE_NEWIPC | nix::sched::CloneFlags::CLONE_NEWUTS;
    if !args.host_network {
        flags |= nix::sched::CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(|e| format!("unshare the pod namespaces: {e}"))?;
    nix::unistd::sethostname(&args.hostname).map_err(|e| format!("sethostname: {e}"))?;
    if !args.host_network {
        loopback_up().map_err(|e| format!("bring lo up: {e}"))?;
    }
    let sock = args.dir.join("shim.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod socket: {e}"))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    // A client that goes away mid-answer must not kill the shim.
    // SAFETY: setting SIGPIPE to ignored, no handler code involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    Ok((listener, sigfd))
}

/// `ip link set lo up` with one ioctl.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket(2) whose descriptor we own below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn now() -> String {
    format!("{:.9}", jiff::Timestamp::now())
}

struct Shim {
    dir: PathBuf,
    ctrs: BTreeMap<String, Ctr>,
    shutting_down: bool,
    /// Exec processes by PID: their exit code once reaped. Bounded: the oldest finished
    /// entries are dropped past `MAX_EXECS`.
    execs: BTreeMap<i32, Option<i32>>,
    /// Connections waiting for an exec's exit (`ExecWait`).
    waiters: Vec<(i32, UnixStream)>,
}

const MAX_EXECS: usize = 1024;
/// Attach sessions per container.
const MAX_ATTACHED: usize = 32;
/// Output queued for one attach session before it is dropped.
const MAX_ATTACH_QUEUE: usize = 4 << 20;

/// An attach session's connection (non-blocking) and the output not yet written to it.
struct Attached {
    sock: UnixStream,
    queue: Vec<u8>,
    /// The output is over: the session ends once its queue is written.
    done: bool,
}

impl Attached {
    /// Write what the socket takes now; `false` once the session is gone.
    fn flush(&mut self) -> bool {
        while !self.queue.is_empty() {
            match (&self.sock).write(&self.queue) {
                Ok(0) => return false,
                Ok(n) => {
                    self.queue.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Whether the other end is still there (it sends nothing after its request).
    fn alive(&mut self) -> bool {
        let mut b = [0u8; 512];
        loop {
            match (&self.sock).read(&mut b) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// Queue an output record for every attach session; drop the ones gone or too far behind.
fn fan_out(attached: &mut Vec<Attached>, stream: u8, data: &[u8]) {
    attached.retain_mut(|a| {
        if a.queue.len() + data.len() + 5 > MAX_ATTACH_QUEUE {
            return false;
        }
        a.queue.push(stream);
        a.queue
            .extend_from_slice(&(data.len() as u32).to_be_bytes());
        a.queue.extend_from_slice(data);
        a.flush()
    });
}

/// Send `resp` as one JSON line with `fds` attached (`SCM_RIGHTS`).
fn send_with_fds(stream: &UnixStream, resp: &Response, fds: &[OwnedFd]) -> bool {
    let Ok(mut body) = serde_json::to_vec(resp) else {
        return false;
    };
    body.push(b'\n');
    let raws: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [std::io::IoSlice::new(&body)];
    let cmsgs = if raws.is_empty() {
        Vec::new()
    } else {
        vec![nix::sys::socket::ControlMessage::ScmRights(&raws)]
    };
    matches!(
        nix::sys::socket::sendmsg::<nix::sys::socket::UnixAddr>(
            stream.as_raw_fd(),
            &iov,
            &cmsgs,
            nix::sys::socket::MsgFlags::empty(),
            None,
        ),
        Ok(n) if n == body.len()
    )
}

fn serve(args: &ShimArgs, listener: UnixListener, sigfd: SignalFd) {
    let mut shim = Shim {
        dir: args.dir.clone(),
        ctrs: BTreeMap::new(),
        shutting_down: false,
        execs: BTreeMap::new(),
        waiters: Vec::new(),
    };
    eprintln!("{} shim ready for {}", now(), args.dir.display());
    loop {
        // Build the poll set: listener, signalfd, then every open log pipe.
        let mut pipes: Vec<(String, bool, i32)> = Vec::new();
        for (id, c) in &shim.ctrs {
            if let Some((fd, _)) = &c.stdout {
                pipes.push((id.clone(), true, fd.as_raw_fd()));
            }
            if let Some((fd, _)) = &c.stderr {
                pipes.push((id.clone(), false, fd.as_raw_fd()));
            }
        }
        let mut fds = vec![
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        for (_, _, raw) in &pipes {
            // SAFETY: the descriptor is owned by `shim.ctrs`, which is not changed until
            // `fds` is dropped at the end of this iteration's poll.
            fds.push(PollFd::new(
                unsafe { BorrowedFd::borrow_raw(*raw) },
                PollFlags::POLLIN,
            ));
        }
        // Attach sessions: POLLIN to notice a closed one, POLLOUT while output is queued.
        let mut sessions: Vec<(String, usize)> = Vec::new();
        for (id, c) in &shim.ctrs {
            for (i, a) in c.attached.iter().enumerate() {
                let mut flags = PollFlags::POLLIN;
                if !a.queue.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                sessions.push((id.clone(), i));
                // SAFETY: as above, owned by `shim.ctrs`, unchanged while `fds` lives.
                fds.push(PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(a.sock.as_raw_fd()) },
                    flags,
                ));
            }
        }
        let next_hang_up = shim.hang_up_due();
        let timeout = if shim.shutting_down {
            100u16
        } else {
            next_hang_up
                .map(|d| d.as_millis().clamp(1, 10_000) as u16)
                .unwrap_or(10_000u16)
        };
        if let Err(e) = poll(&mut fds, PollTimeout::from(timeout)) {
            if e != nix::errno::Errno::EINTR {
                eprintln!("{} poll: {e}", now());
            }
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        // Sessions first (indices are stable until something is removed), highest index
        // first so removing one leaves the lower indices valid.
        for (k, (id, i)) in sessions.iter().enumerate().rev() {
            if !ready[2 + pipes.len() + k] {
                continue;
            }
            if let Some(c) = shim.ctrs.get_mut(id) {
                if let Some(a) = c.attached.get_mut(*i) {
                    if !(a.alive() && a.flush()) || (a.done && a.queue.is_empty()) {
                        c.attached.remove(*i);
                    }
                }
            }
        }
        for (i, (id, out, _)) in pipes.iter().enumerate() {
            if ready[i + 2] {
                shim.pump(id, *out);
            }
        }
        if ready[1] {
            while let Ok(Some(_)) = sigfd.read_signal() {}
            shim.reap();
        }
        if ready[0] {
            if let Ok((stream, _)) = listener.accept() {
                shim.handle(stream);
            }
        }
        if shim.shutting_down && shim.ctrs.values().all(|c| !c.state.running) {
            break;
        }
    }
    for c in shim.ctrs.values() {
        if let Some(p) = &c.cgroup_path {
            super::cgroup::remove(p);
        }
    }
    let _ = std::fs::remove_file(args.dir.join("shim.sock"));
    eprintln!("{} shim exits", now());
}

impl Shim {
    fn handle(&mut self, stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream).take(4 << 20);
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Exec { id, process }) => return self.exec(stream, &id, &process),
            Ok(Request::Attach { id, stdin }) => return self.attach(stream, &id, stdin),
            Ok(Request::ExecWait { pid }) => {
                if let Some(None) = self.execs.get(&pid) {
                    // Still running: answered by `reap`.
                    self.waiters.push((pid, stream));
                    return;
                }
                let code = self.execs.get(&pid).copied().flatten();
                Response {
                    shim_pid: std::process::id() as i32,
                    exec: Some(ExecState {
                        pid,
                        exit_code: code,
                    }),
                    error: code.is_none().then(|| format!("no exec process {pid}")),
                    ..Default::default()
                }
            }
            Ok(req) => self.apply(req),
            Err(e) => Response {
                error: Some(format!("bad request: {e}")),
                ..Default::default()
            },
        };
        let mut w = &stream;
        if let Ok(mut body) = serde_json::to_vec(&resp) {
            body.push(b'\n');
            let _ = w.write_all(&body);
        }
    }

    /// Start an exec process and answer with its PID and, alongside, its descriptors.
    fn exec(&mut self, stream: UnixStream, id: &str, process: &super::exec::Process) {
        let mut resp = Response {
            shim_pid: std::process::id() as i32,
            ..Default::default()
        };
        let started = match self.ctrs.get(id) {
            Some(c) if c.state.running => {
                super::exec::start(&c.spec, c.state.pid, &c.cgroup_dirs, process)
                    .map_err(|e| e.to_string())
            }
            Some(_) => Err(format!("container {id} is not running")),
            None => Err(format!("no container {id}")),
        };
        let fds = match started {
            Ok(s) => {
                if self.execs.len() >= MAX_EXECS {
                    let done: Vec<i32> = self
                        .execs
                        .iter()
                        .filter(|(_, c)| c.is_some())
                        .map(|(p, _)| *p)
                        .take(MAX_EXECS / 2)
                        .collect();
                    for p in done {
                        self.execs.remove(&p);
                    }
                }
                self.execs.insert(s.pid, None);
                resp.exec = Some(ExecState {
                    pid: s.pid,
                    exit_code: None,
                });
                eprintln!("{} exec in {id}: pid {}", now(), s.pid);
                s.fds
            }
            Err(e) => {
                resp.error = Some(e);
                Vec::new()
            }
        };
        send_with_fds(&stream, &resp, &fds);
        // Our copies close here; the agent holds its own.
        drop(fds);
    }

    /// Start an attach session on `stream` (see the module docs).
    fn attach(&mut self, stream: UnixStream, id: &str, want_stdin: bool) {
        let mut resp = Response {
            shim_pid: std::process::id() as i32,
            ..Default::default()
        };
        let mut fds = Vec::new();
        let mut keep = false;
        match self.ctrs.get_mut(id) {
            Some(c) if !c.state.running => {
                resp.error = Some(format!("container {id} is not running"))
            }
            Some(c) if c.attached.len() >= MAX_ATTACHED => {
                resp.error = Some(format!("container {id} has too many attach sessions"))
            }
            Some(c) => {
                if want_stdin {
                    let once = c.spec.process.stdin_once;
                    let given = if once {
                        c.stdin.take()
                    } else {
                        c.stdin.as_ref().and_then(|f| f.try_clone().ok())
                    };
                    fds.extend(given);
                }
                // Output still flowing: the session gets it; else it ends at once.
                keep = c.stdout.is_some() || c.stderr.is_some();
            }
            None => resp.error = Some(format!("no container {id}")),
        }
        if !send_with_fds(&stream, &resp, &fds) || !keep {
            return;
        }
        drop(fds);
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        if let Some(c) = self.ctrs.get_mut(id) {
            c.attached.push(Attached {
                sock: stream,
                queue: Vec::new(),
                done: false,
            });
        }
    }

    fn apply(&mut self, req: Request) -> Response {
        let mut resp = Response {
            shim_pid: std::process::id() as i32,
            ..Default::default()
        };
        match req {
            Request::Run { id, spec } => {
                if let Err(e) = self.run(&id, &spec) {
                    resp.error = Some(e);
                }
            }
            Request::Kill { id, signal } => match self.ctrs.get(&id) {
                Some(c) if c.state.running => {
                    let sig = Signal::try_from(signal).unwrap_or(Signal::SIGKILL);
                    let _ = nix::sys::signal::kill(container::pid(c.state.pid), sig);
                }
                Some(_) => {}
                None => resp.error = Some(format!("no container {id}")),
            },
            Request::Remove { id } => match self.ctrs.get(&id) {
                Some(c) if c.state.running => {
                    resp.error = Some(format!("container {id} is running"))
                }
                Some(_) => {
                    self.ctrs.remove(&id);
                    let _ = std::fs::remove_dir_all(self.dir.join(&id));
                }
                None => {}
            },
            Request::CloseStdin { id } => self.stdin_closed(&id),
            Request::Shutdown => {
                self.shutting_down = true;
                for c in self.ctrs.values().filter(|c| c.state.running) {
                    let _ = nix::sys::signal::kill(container::pid(c.state.pid), Signal::SIGKILL);
                }
            }
            Request::ExecKill { pid, signal } => match self.execs.get(&pid) {
                // Not reaped yet, so the PID cannot have been reused.
                Some(None) => {
                    let sig = Signal::try_from(signal).unwrap_or(Signal::SIGKILL);
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                }
                Some(Some(_)) => {}
                None => resp.error = Some(format!("no exec process {pid}")),
            },
            Request::State => {}
            // Served by `handle`.
            Request::Exec { .. } | Request::ExecWait { .. } | Request::Attach { .. } => {}
        }
        resp.containers = self.ctrs.values().map(|c| c.state.clone()).collect();
        resp
    }

    fn run(&mut self, id: &str, spec: &Spec) -> Result<(), String> {
        if self.shutting_down {
            return Err("the pod is shutting down".into());
        }
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(format!("invalid container id {id:?}"));
        }
        if self.ctrs.contains_key(id) {
            return Err(format!("container {id} exists"));
        }
        let log = match &spec.log_path {
            Some(p) => Some(
                logs::LogFile::open(
                    p,
                    spec.log_max_bytes.unwrap_or(logs::MAX_BYTES),
                    spec.log_max_files.unwrap_or(logs::MAX_FILES),
                )
                .map_err(|e| format!("log file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let dir = self.dir.join(id);
        let started = container::start(spec, &dir).map_err(|e| e.to_string());
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        for fd in std::iter::once(&started.stdout).chain(started.stderr.as_ref()) {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
        }
        self.ctrs.insert(
            id.to_string(),
            Ctr {
                state: ContainerState {
                    id: id.to_string(),
                    pid: started.pid,
                    running: true,
                    exit_code: None,
                    signal: None,
                    started_at: now(),
                    finished_at: None,
                    oom_killed: false,
                    annotations: spec.annotations.clone(),
                },
                stdout: Some((started.stdout, logs::Stream::new("stdout"))),
                stderr: started.stderr.map(|fd| (fd, logs::Stream::new("stderr"))),
                stdin: started.stdin,
                attached: Vec::new(),
                log,
                cgroup_path: spec.linux.cgroups_path.clone(),
                cgroup_dirs: started.cgroup_dirs,
                spec: Box::new(spec.clone()),
                hang_up_at: None,
            },
        );
        Ok(())
    }

    /// `tty` + `stdinOnce`: the session holding stdin ended (see `Request::CloseStdin`).
    fn stdin_closed(&mut self, id: &str) {
        let Some(c) = self.ctrs.get_mut(id) else {
            return;
        };
        let p = &c.spec.process;
        // `stdin` still here: no stdinOnce session has taken it, nothing to close.
        if !(p.terminal && p.stdin && p.stdin_once && c.stdin.is_none() && c.state.running)
            || c.hang_up_at.is_some()
        {
            return;
        }
        if let Some((master, _)) = &c.stdout {
            // VEOF (^D, the terminal's default); through the master it is input like any
            // other, read after what came before it.
            let _ = nix::unistd::write(master, &[4u8]);
        }
        c.hang_up_at = Some(std::time::Instant::now() + HANG_UP_GRACE);
    }

    /// Hang up the terminals whose grace ran out; the time until the next one is due.
    fn hang_up_due(&mut self) -> Option<Duration> {
        let now = std::time::Instant::now();
        let due: Vec<String> = self
            .ctrs
            .iter()
            .filter(|(_, c)| c.hang_up_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.hang_up(&id);
        }
        self.ctrs
            .values()
            .filter_map(|c| c.hang_up_at)
            .map(|t| t.saturating_duration_since(now))
            .min()
    }

    /// Close the terminal's master (what the master still holds reaches the log first): the
    /// container's side reads EOF/EIO and its session leader gets SIGHUP.
    fn hang_up(&mut self, id: &str) {
        let Some(c) = self.ctrs.get_mut(id) else {
            return;
        };
        c.hang_up_at = None;
        if !c.state.running {
            return;
        }
        self.pump(id, true);
        let Some(c) = self.ctrs.get_mut(id) else {
            return;
        };
        if let Some((fd, mut stream)) = c.stdout.take() {
            let mut sink = LogSink(c.log.as_mut());
            let _ = stream.close(&mut sink);
            drop(fd);
            eprintln!("{} stdin of {id} closed: terminal hung up", now());
        }
        if c.stderr.is_none() {
            for a in &mut c.attached {
                a.done = true;
                a.flush();
            }
            c.attached.retain(|a| !a.queue.is_empty());
        }
    }

    /// Move what a pipe holds into the log; close it at EOF.
    fn pump(&mut self, id: &str, stdout: bool) {
        let Some(c) = self.ctrs.get_mut(id) else {
            return;
        };
        let slot = if stdout { &mut c.stdout } else { &mut c.stderr };
        let Some((fd, stream)) = slot else { return };
        let mut buf = [0u8; 65536];
        let mut sink = LogSink(c.log.as_mut());
        loop {
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = stream.feed(&buf[..n], &mut sink);
                    fan_out(&mut c.attached, if stdout { 1 } else { 2 }, &buf[..n]);
                    if n < buf.len() {
                        return;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                // End of the stream (a pty master reads EIO once the container's side is
                // closed) or a broken pipe.
                _ => {
                    let _ = stream.close(&mut sink);
                    *slot = None;
                    if c.stdout.is_none() && c.stderr.is_none() {
                        // The output is over: attach sessions end (what ends `kubectl attach`).
                        for a in &mut c.attached {
                            a.done = true;
                            a.flush();
                        }
                        c.attached.retain(|a| !a.queue.is_empty());
                    }
                    return;
                }
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid.as_raw(), Some(code), None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.exited(pid.as_raw(), None, Some(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn exited(&mut self, pid: i32, code: Option<i32>, signal: Option<i32>) {
        if let Some(slot) = self.execs.get_mut(&pid) {
            let code = code.or(signal.map(|s| 128 + s)).unwrap_or(0);
            *slot = Some(code);
            let resp = Response {
                shim_pid: std::process::id() as i32,
                exec: Some(ExecState {
                    pid,
                    exit_code: Some(code),
                }),
                ..Default::default()
            };
            let mut body = serde_json::to_vec(&resp).unwrap_or_default();
            body.push(b'\n');
            let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
                .into_iter()
                .partition(|(p, _)| *p == pid);
            self.waiters = rest;
            for (_, s) in done {
                let _ = (&s).write_all(&body);
            }
            return;
        }
        let ids: Vec<String> = self
            .ctrs
            .iter()
            .filter(|(_, c)| c.state.pid == pid && c.state.running)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            // Drain what the pipes still hold before the exit is visible.
            self.pump(&id, true);
            self.pump(&id, false);
            let Some(c) = self.ctrs.get_mut(&id) else {
                continue;
            };
            c.state.running = false;
            c.state.exit_code = code.or(signal.map(|s| 128 + s));
            c.state.signal = signal;
            c.state.finished_at = Some(now());
            c.state.oom_killed = super::cgroup::oom_killed(&c.cgroup_dirs);
            if let Some(p) = &c.cgroup_path {
                super::cgroup::remove(p);
            }
            eprintln!(
                "{} container {id} (pid {pid}) exited: code {code:?} signal {signal:?}",
                now()
            );
        }
    }
}

/// Writes log lines to the container's file, if it has one.
struct LogSink<'a>(Option<&'a mut logs::LogFile>);

impl Write for LogSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The socket of a pod's shim.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join("shim.sock")
}
