//! A process started inside a running container (`kubectl exec`; runc's `exec`), by the
//! shim — never by the multi-threaded agent. The shim opens the container's PID and mount
//! namespaces through `/proc/<pid>/ns`, moves its own `pid_for_children` into the container's
//! PID namespace for one `fork(2)` (and back at once), so the process is the shim's child
//! (reaped by it) and a member of the container's PID namespace. The child enters the mount
//! namespace (whose root is the container's root after its `pivot_root`), waits until the
//! shim has put it into the container's cgroups, takes the container's working directory and
//! then the very same last steps as the container's own process (`container::enter`:
//! bounding set, seccomp, groups, uid/gid, capabilities, `no_new_privs`, descriptors closed,
//! the container's environment), and `execve`s the command.
//!
//! Stdio: with `tty`, a new pseudo-terminal (the child is a session leader with the slave as
//! its controlling terminal; the master goes to the caller, who also resizes it); without,
//! pipes (stdin only when asked, else `/dev/null`). The caller's ends are handed back and
//! passed to the agent over the shim's socket (`SCM_RIGHTS`).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::container::{self, Error};
use super::spec::Spec;
use super::{cgroup, seccomp};

/// What to run in the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub args: Vec<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
}

/// A started exec: its PID (in the shim's namespace) and the caller's descriptors, in order:
/// with `tty` the pty master; else stdin's write end (only if asked), stdout, stderr.
pub struct Started {
    pub pid: i32,
    pub fds: Vec<OwnedFd>,
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Sys {
        what: what.into(),
        source: e.into(),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))
}

/// A new pty: (master, slave), both close-on-exec.
pub(super) fn openpty() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty(3) writes two descriptors into our integers; no name/termios/winsize.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::Sys {
            what: "openpty".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both descriptors were just returned by openpty and are owned by nothing else.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&m, &s] {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    Ok((m, s))
}

/// Start `p` inside the container whose init is `ctr_pid`, configured by `spec`.
pub fn start(
    spec: &Spec,
    ctr_pid: i32,
    cgroup_dirs: &[PathBuf],
    p: &Process,
) -> Result<Started, Error> {
    if p.args.is_empty() {
        return Err(Error::Setup("no command to run".into()));
    }
    let programs = match spec.linux.seccomp.as_deref() {
        None => Vec::new(),
        Some("runtime/default") => seccomp::default_programs()?,
        Some(other) => return Err(Error::Setup(format!("unknown seccomp profile {other:?}"))),
    };
    let caps = container::cap_mask(&spec.process.capabilities)?;
    let open_ns = |what: &str| -> Result<std::fs::File, Error> {
        std::fs::File::open(format!("/proc/{ctr_pid}/ns/{what}")).map_err(|source| Error::Sys {
            what: format!("open the container's {what} namespace"),
            source,
        })
    };
    let mnt = open_ns("mnt")?;
    let pidns = if spec.linux.host_pid {
        None
    } else {
        Some(open_ns("pid")?)
    };
    let own_pidns = std::fs::File::open("/proc/self/ns/pid").map_err(|source| Error::Sys {
        what: "open the shim's pid namespace".into(),
        source,
    })?;
    // The caller's ends and the child's (stdin, stdout, stderr).
    let mut mine: Vec<OwnedFd> = Vec::new();
    let child_fds: [OwnedFd; 3];
    let mut pty_slave = false;
    if p.tty {
        let (m, s) = openpty()?;
        let s2 = s.try_clone().map_err(|source| Error::Sys {
            what: "dup".into(),
            source,
        })?;
        let s3 = s.try_clone().map_err(|source| Error::Sys {
            what: "dup".into(),
            source,
        })?;
        mine.push(m);
        child_fds = [s, s2, s3];
        pty_slave = true;
    } else {
        let stdin = if p.stdin {
            let (r, w) = pipe()?;
            mine.push(w);
            r
        } else {
            OwnedFd::from(
                std::fs::File::open("/dev/null").map_err(|source| Error::Sys {
                    what: "open /dev/null".into(),
                    source,
                })?,
            )
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        mine.push(out_r);
        mine.push(err_r);
        child_fds = [stdin, out_w, err_w];
    }
    let (fail_r, fail_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    if let Some(ns) = &pidns {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWPID).map_err(sys("setns pid"))?;
    }
    // SAFETY: the shim is single-threaded, so the child inherits no lock held by another
    // thread; it runs `child` below, which ends in execve or _exit.
    let forked = unsafe { nix::unistd::fork() };
    if pidns.is_some() {
        // Back to the shim's own namespace for its later children (containers, execs).
        let _ = nix::sched::setns(&own_pidns, nix::sched::CloneFlags::CLONE_NEWPID);
    }
    match forked.map_err(sys("fork"))? {
        nix::unistd::ForkResult::Child => {
            drop(mine);
            let e = child(
                spec,
                &programs,
                caps,
                &p.args,
                &mnt,
                [
                    child_fds[0].as_raw_fd(),
                    child_fds[1].as_raw_fd(),
                    child_fds[2].as_raw_fd(),
                ],
                pty_slave,
                sync_r.as_raw_fd(),
            );
            let msg = e.to_string();
            // SAFETY: write(2) of a local buffer to our own pipe end, then _exit(2).
            unsafe {
                libc::write(fail_w.as_raw_fd(), msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            }
        }
        nix::unistd::ForkResult::Parent { child: pid } => {
            drop(child_fds);
            drop((fail_w, sync_r));
            let fail = |msg: String| -> Error {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                Error::Setup(msg)
            };
            if let Err(e) = cgroup::join(cgroup_dirs, pid.as_raw()) {
                return Err(fail(e.to_string()));
            }
            let mut sync = std::fs::File::from(sync_w);
            if let Err(e) = sync.write_all(b"1") {
                return Err(fail(format!("cannot release the exec process: {e}")));
            }
            drop(sync);
            let mut msg = String::new();
            let _ = std::fs::File::from(fail_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                return Err(fail(msg));
            }
            Ok(Started {
                pid: pid.as_raw(),
                fds: mine,
            })
        }
    }
}

/// The child's life: namespaces, stdio, wait for the cgroup, then `container::enter`.
#[allow(clippy::too_many_arguments)]
fn child(
    spec: &Spec,
    programs: &[seccompiler::BpfProgram],
    caps: u64,
    args: &[String],
    mnt: &std::fs::File,
    stdio: [RawFd; 3],
    tty: bool,
    sync_r: RawFd,
) -> Error {
    let mut b = [0u8; 1];
    // SAFETY: our own pipe end; read(2) into a local buffer.
    if unsafe { libc::read(sync_r, b.as_mut_ptr().cast(), 1) } != 1 {
        return Error::Setup("the shim did not release the exec process".into());
    }
    // The shim blocks SIGCHLD and ignores SIGPIPE; give the command the defaults.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: resetting a disposition to SIG_DFL installs no handler code.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    if let Err(e) = nix::sched::setns(mnt, nix::sched::CloneFlags::CLONE_NEWNS) {
        return sys("setns mnt")(e);
    }
    let cwd = if spec.process.cwd.is_empty() {
        "/"
    } else {
        spec.process.cwd.as_str()
    };
    if let Err(e) = nix::unistd::chdir(cwd) {
        return sys("chdir to the working directory")(e);
    }
    if tty {
        if let Err(e) = nix::unistd::setsid() {
            return sys("setsid")(e);
        }
    }
    for (from, to) in stdio.iter().zip(0..) {
        // SAFETY: dup2(2) onto the standard descriptors of this (child) process.
        if unsafe { libc::dup2(*from, to) } < 0 {
            return Error::Sys {
                what: "dup2".into(),
                source: std::io::Error::last_os_error(),
            };
        }
    }
    if tty {
        // SAFETY: TIOCSCTTY on our stdin (the pty slave) with an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Error::Sys {
                what: "set the controlling terminal".into(),
                source: std::io::Error::last_os_error(),
            };
        }
    }
    container::enter(spec, programs, caps, args)
}

/// Set a pty's window size (the master's side).
pub fn resize(master: RawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass.
    if unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
