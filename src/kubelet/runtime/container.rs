//! Starting one container: `clone(2)` from the single-threaded shim into new mount and PID
//! namespaces (the pod's network, IPC and UTS namespaces are the shim's own), then, in the
//! child: overlayfs root, `/proc` `/dev` `/sys`, the spec's mounts, runc's masked and
//! read-only paths, `pivot_root`, bounding-set drop, seccomp, user and groups, `capset`,
//! `no_new_privs`, every inherited descriptor above stdio marked close-on-exec
//! (CVE-2024-21626), `execve`.
//!
//! Protocol with the child: it waits on a sync pipe until the parent has put it in its
//! cgroup; any failure before `execve` is written to a close-on-exec error pipe and the
//! child exits 127, so an empty read (EOF) on that pipe means `execve` succeeded. Nothing is
//! started half-configured (fail closed).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::Pid;

use super::cgroup;
use super::seccomp;
use super::spec::{Spec, MASKED_PATHS, READONLY_PATHS};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Cgroup(#[from] cgroup::Error),
    #[error("{0}")]
    Seccomp(#[from] seccomp::Error),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |e| Error::Sys {
        what,
        source: e.into(),
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Sys { what, source }
}

/// A started container as the shim holds it.
pub struct Started {
    pub pid: i32,
    /// The read end of stdout, or the pty master with `terminal` (the one output stream).
    pub stdout: OwnedFd,
    /// The read end of stderr; `None` with `terminal`.
    pub stderr: Option<OwnedFd>,
    /// The write end of stdin (a dup of the pty master with `terminal`) when the spec keeps
    /// stdin open.
    pub stdin: Option<OwnedFd>,
    pub cgroup_dirs: Vec<PathBuf>,
}

/// The container's stdio: the child's descriptors (stdin `None`: `/dev/null`, opened inside
/// the container) and the shim's ends.
struct Stdio {
    child: [Option<OwnedFd>; 3],
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
}

impl Stdio {
    fn new(p: &super::spec::Process) -> Result<Stdio, Error> {
        if p.terminal {
            let (master, slave) = super::exec::openpty()?;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(io("dup"));
            let stdin = if p.stdin { Some(dup(&master)?) } else { None };
            let child = [Some(dup(&slave)?), Some(dup(&slave)?), Some(slave)];
            return Ok(Stdio {
                child,
                stdout: master,
                stderr: None,
                stdin,
            });
        }
        let (stdin_r, stdin_w) = if p.stdin {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(Stdio {
            child: [stdin_r, Some(out_w), Some(err_w)],
            stdout: out_r,
            stderr: Some(err_r),
            stdin: stdin_w,
        })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))
}

/// Capability names → bit mask.
pub fn cap_mask(names: &[String]) -> Result<u64, Error> {
    let mut mask = 0u64;
    for n in names {
        let n = n.to_ascii_uppercase();
        let n = n.strip_prefix("CAP_").unwrap_or(&n);
        let bit = CAP_NAMES
            .iter()
            .position(|c| *c == n)
            .ok_or_else(|| Error::Setup(format!("unknown capability {n:?}")))?;
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// Capability names by number (linux/capability.h).
pub const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Start the container described by `spec` with its state in `dir` (created).
pub fn start(spec: &Spec, dir: &Path) -> Result<Started, Error> {
    if spec.process.args.is_empty() {
        return Err(Error::Setup("no command to run".into()));
    }
    for l in &spec.root.layers {
        if !l.is_dir() {
            return Err(Error::Setup(format!("layer {} is missing", l.display())));
        }
    }
    let rootfs = dir.join("rootfs");
    for d in ["rootfs", "upper", "work"] {
        std::fs::create_dir_all(dir.join(d)).map_err(io(format!("mkdir {}", dir.display())))?;
    }
    let programs = match spec.linux.seccomp.as_deref() {
        None => Vec::new(),
        Some("runtime/default") => seccomp::default_programs()?,
        Some(other) => return Err(Error::Setup(format!("unknown seccomp profile {other:?}"))),
    };
    let caps = cap_mask(&spec.process.capabilities)?;
    let cgroup_dirs = match &spec.linux.cgroups_path {
        Some(p) => cgroup::create(p, &spec.linux.resources)?,
        None => Vec::new(),
    };
    let Stdio {
        child: child_io,
        stdout,
        stderr,
        stdin,
    } = Stdio::new(&spec.process)?;
    let raw = |fd: &Option<OwnedFd>| fd.as_ref().map(|f| f.as_raw_fd());
    let (fail_r, fail_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    let child = Child {
        spec,
        dir,
        rootfs: &rootfs,
        programs: &programs,
        caps,
        stdio: [raw(&child_io[0]), raw(&child_io[1]), raw(&child_io[2])],
        fail_w: fail_w.as_raw_fd(),
        sync_r: sync_r.as_raw_fd(),
    };
    let mut flags = CloneFlags::CLONE_NEWNS;
    if !spec.linux.host_pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    let mut stack = vec![0u8; 1 << 20];
    // SAFETY: the shim is single-threaded, so the child (a copy of this process without
    // CLONE_VM) holds no lock another thread owned; it runs `Child::run`, which ends in
    // execve or _exit and never returns into the parent's stack frames.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| child.run()),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(sys("clone"))?;
    // The shim keeps no child end: a pty master reads EIO once the container's side closes.
    drop((child_io, fail_w, sync_r));
    let fail = |msg: String| -> Error {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        if let Some(p) = &spec.linux.cgroups_path {
            cgroup::remove(p);
        }
        Error::Setup(msg)
    };
    if let Err(e) = cgroup::join(&cgroup_dirs, pid.as_raw()) {
        return Err(fail(e.to_string()));
    }
    let mut sync = std::fs::File::from(sync_w);
    if let Err(e) = sync.write_all(b"1") {
        return Err(fail(format!("cannot release the container process: {e}")));
    }
    drop(sync);
    let mut msg = String::new();
    let _ = std::fs::File::from(fail_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(fail(msg));
    }
    Ok(Started {
        pid: pid.as_raw(),
        stdout,
        stderr,
        stdin,
        cgroup_dirs,
    })
}

struct Child<'a> {
    spec: &'a Spec,
    dir: &'a Path,
    rootfs: &'a Path,
    programs: &'a [seccompiler::BpfProgram],
    caps: u64,
    /// stdin (`None`: `/dev/null`), stdout, stderr.
    stdio: [Option<RawFd>; 3],
    fail_w: RawFd,
    sync_r: RawFd,
}

impl Child<'_> {
    /// The child's whole life: never returns except by exit.
    fn run(&self) -> isize {
        let mut b = [0u8; 1];
        // SAFETY: our own pipe end, inherited; read(2) into a local buffer.
        let n = unsafe { libc::read(self.sync_r, b.as_mut_ptr().cast(), 1) };
        if n != 1 {
            // SAFETY: _exit(2) ends this child without running the parent's destructors.
            unsafe { libc::_exit(127) };
        }
        let e = self.setup_and_exec();
        let msg = e.to_string();
        // SAFETY: write(2) of a local buffer to our own pipe end, then _exit(2).
        unsafe {
            libc::write(self.fail_w, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    }

    fn setup_and_exec(&self) -> Error {
        match self.setup() {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    fn setup(&self) -> Result<std::convert::Infallible, Error> {
        let spec = self.spec;
        // The shim blocks SIGCHLD (for its signalfd) and ignores SIGPIPE; a blocked mask and
        // ignored signals survive execve, so give the container the defaults.
        nix::sys::signal::SigSet::empty()
            .thread_set_mask()
            .map_err(sys("reset the signal mask"))?;
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // SAFETY: resetting a disposition to SIG_DFL installs no handler code.
                unsafe { libc::signal(sig, libc::SIG_DFL) };
            }
        }
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(sys("make / private"))?;
        self.mount_rootfs()?;
        self.mount_system()?;
        for m in &spec.mounts {
            self.mount_one(m)?;
        }
        if spec.linux.masked_paths {
            self.mask_paths()?;
        }
        if let Some(adj) = spec.process.oom_score_adj {
            let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
        }
        // pivot_root(".", ".") stacks the old root under the new one; detach it.
        nix::unistd::chdir(self.rootfs).map_err(sys("chdir rootfs"))?;
        nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root"))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach the old root"))?;
        nix::unistd::chdir("/").map_err(sys("chdir /"))?;
        if spec.root.readonly {
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(sys("remount / read-only"))?;
        }
        let cwd = if spec.process.cwd.is_empty() {
            "/"
        } else {
            &spec.process.cwd
        };
        if !spec.root.readonly {
            let _ = std::fs::create_dir_all(cwd);
        }
        nix::unistd::chdir(cwd).map_err(sys(format!("chdir {cwd}")))?;
        self.stdio()?;
        Err(enter(spec, self.programs, self.caps, &spec.process.args))
    }

    fn mount_rootfs(&self) -> Result<(), Error> {
        let lower: Vec<String> = self
            .spec
            .root
            .layers
            .iter()
            .rev()
            .map(|p| escape_overlay(p))
            .collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            escape_overlay(&self.dir.join("upper")),
            escape_overlay(&self.dir.join("work"))
        );
        mount(
            Some("overlay"),
            self.rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(sys("mount the overlay root filesystem"))
    }

    fn mount_system(&self) -> Result<(), Error> {
        let r = self.rootfs;
        let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let proc_ = mkdir_in(r, "/proc")?;
        if self.spec.linux.host_pid {
            mount(
                Some("/proc"),
                &proc_,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys("bind /proc"))?;
        } else {
            mount(Some("proc"), &proc_, Some("proc"), nosuid, None::<&str>)
                .map_err(sys("mount /proc"))?;
        }
        let dev = mkdir_in(r, "/dev")?;
        mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        )
        .map_err(sys("mount /dev"))?;
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
            let p = dev.join(name);
            nix::sys::stat::mknod(
                &p,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(major, minor),
            )
            .map_err(sys(format!("mknod /dev/{name}")))?;
            // mknod applies the umask; devices must be 0666.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))
                .map_err(io("chmod device"))?;
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
            ("core", "/proc/kcore"),
        ] {
            std::os::unix::fs::symlink(target, dev.join(link)).map_err(io("symlink in /dev"))?;
        }
        for (d, fs, flags, opts) in [
            (
                "pts",
                "devpts",
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620,gid=5",
            ),
            ("shm", "tmpfs", nosuid, "mode=1777,size=65536k"),
            ("mqueue", "mqueue", nosuid, ""),
        ] {
            let p = dev.join(d);
            std::fs::create_dir(&p).map_err(io(format!("mkdir /dev/{d}")))?;
            mount(Some(fs), &p, Some(fs), flags, Some(opts))
                .map_err(sys(format!("mount /dev/{d}")))?;
        }
        let sys_ = mkdir_in(r, "/sys")?;
        mount(
            Some("sysfs"),
            &sys_,
            Some("sysfs"),
            nosuid | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(sys("mount /sys"))?;
        Ok(())
    }

    fn mount_one(&self, m: &super::spec::Mount) -> Result<(), Error> {
        match m.kind.as_str() {
            "bind" => {
                let src = m.source.as_ref().ok_or_else(|| {
                    Error::Setup(format!("bind mount {} without a source", m.destination))
                })?;
                // A subPath is opened here, in the container's mount namespace just before
                // the mount, and mounted through its descriptor: whatever another container
                // of the pod does to the volume, this mounts what was opened, and opening
                // follows no symlink and cannot leave the volume (CVE-2021-25741).
                let sub = match &m.sub_path {
                    Some(rel) => Some(open_beneath(src, rel).map_err(|e| {
                        Error::Setup(format!(
                            "subPath {} of the mount at {}: {e}",
                            rel.display(),
                            m.destination
                        ))
                    })?),
                    None => None,
                };
                let from = match &sub {
                    Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
                    None => src.clone(),
                };
                let meta = std::fs::metadata(&from)
                    .map_err(io(format!("mount source {}", src.display())))?;
                let dst = if meta.is_dir() {
                    mkdir_in(self.rootfs, &m.destination)?
                } else {
                    touch_in(self.rootfs, &m.destination)?
                };
                mount(
                    Some(from.as_path()),
                    &dst,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(sys(format!("bind mount {}", m.destination)))?;
                drop(sub);
                if m.readonly {
                    mount(
                        None::<&str>,
                        &dst,
                        None::<&str>,
                        MsFlags::MS_BIND
                            | MsFlags::MS_REMOUNT
                            | MsFlags::MS_RDONLY
                            | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(sys(format!("read-only {}", m.destination)))?;
                }
            }
            "tmpfs" => {
                let dst = mkdir_in(self.rootfs, &m.destination)?;
                let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                if m.readonly {
                    flags |= MsFlags::MS_RDONLY;
                }
                mount(Some("tmpfs"), &dst, Some("tmpfs"), flags, Some("mode=755"))
                    .map_err(sys(format!("mount tmpfs {}", m.destination)))?;
            }
            other => return Err(Error::Setup(format!("unsupported mount type {other:?}"))),
        }
        Ok(())
    }

    fn mask_paths(&self) -> Result<(), Error> {
        for p in MASKED_PATHS {
            let Ok(target) = secure_join(self.rootfs, p) else {
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(&target) else {
                continue;
            };
            let r = if meta.is_dir() {
                mount(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None::<&str>,
                )
            } else {
                mount(
                    Some("/dev/null"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
            };
            r.map_err(sys(format!("mask {p}")))?;
        }
        for p in READONLY_PATHS {
            let Ok(target) = secure_join(self.rootfs, p) else {
                continue;
            };
            if !target.exists() {
                continue;
            }
            mount(
                Some(&target),
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys(format!("bind {p}")))?;
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_REC
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(sys(format!("read-only {p}")))?;
        }
        Ok(())
    }

    fn stdio(&self) -> Result<(), Error> {
        let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, Mode::empty())
            .map_err(sys("open /dev/null"))?;
        if self.spec.process.terminal {
            // A session of its own with the pty slave as its controlling terminal, as runc
            // does for `terminal: true` (job control, SIGWINCH, ^C reach the container).
            nix::unistd::setsid().map_err(sys("setsid"))?;
        }
        for (from, to) in self.stdio.iter().zip(0..) {
            let from = from.unwrap_or(null.as_raw_fd());
            // SAFETY: dup2(2) onto the standard descriptors of this (child) process.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(io("dup2")(std::io::Error::last_os_error()));
            }
        }
        if self.spec.process.terminal {
            // SAFETY: TIOCSCTTY on our stdin (the pty slave) with an integer argument.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
                return Err(io("set the controlling terminal")(
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }
}

/// The last steps of a container process, shared with processes exec'd into it later:
/// bounding set, seccomp, groups, gid, uid, capabilities, `no_new_privs`, every descriptor
/// above stdio close-on-exec, `execve(args)`. Returns only on failure.
pub(super) fn enter(
    spec: &Spec,
    programs: &[seccompiler::BpfProgram],
    caps: u64,
    args: &[String],
) -> Error {
    match enter_inner(spec, programs, caps, args) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn enter_inner(
    spec: &Spec,
    programs: &[seccompiler::BpfProgram],
    caps: u64,
    args: &[String],
) -> Result<std::convert::Infallible, Error> {
    if args.is_empty() {
        return Err(Error::Setup("no command to run".into()));
    }
    drop_bounding(caps)?;
    for p in programs {
        seccomp::install(p).map_err(io("install the seccomp profile"))?;
    }
    let u = &spec.process.user;
    let gids: Vec<nix::unistd::Gid> = u
        .additional_gids
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(sys("setgroups"))?;
    let gid = nix::unistd::Gid::from_raw(u.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setresgid"))?;
    let uid = nix::unistd::Uid::from_raw(u.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setresuid"))?;
    let eff = if u.uid == 0 { caps } else { 0 };
    capset(eff, eff, 0).map_err(io("capset"))?;
    if spec.process.no_new_privileges {
        // SAFETY: prctl(2) with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io("no_new_privs")(std::io::Error::last_os_error()));
        }
    }
    // Every descriptor above stdio closes at execve; the error pipe stays usable until
    // then (it is close-on-exec already).
    // SAFETY: close_range(2) with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0 {
        return Err(io("close_range")(std::io::Error::last_os_error()));
    }
    let env: Vec<CString> = spec
        .process
        .env
        .iter()
        .filter_map(|e| CString::new(e.as_bytes()).ok())
        .collect();
    let prog = resolve(&args[0], &spec.process.env);
    let cargs: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::Setup("an argument holds a NUL byte".into()))?;
    let path = CString::new(prog.as_bytes())
        .map_err(|_| Error::Setup("the command holds a NUL byte".into()))?;
    let e = nix::unistd::execve(&path, &cargs, &env).err();
    Err(Error::Setup(format!(
        "exec: {:?}: {}",
        args[0],
        e.map(|e| e.desc()).unwrap_or("failed")
    )))
}

fn drop_bounding(caps: u64) -> Result<(), Error> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in 0..=last.min(63) {
        if caps & (1 << cap) == 0 {
            // SAFETY: prctl(2) with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(io("drop a bounding capability")(e));
                }
            }
        }
    }
    // SAFETY: prctl(2) with integer arguments: clear the ambient set.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> std::io::Result<()> {
    const V3: u32 = 0x2008_0522;
    let hdr = CapHeader {
        version: V3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: capset(2) reads the header and two data structs, all alive here.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `rel` beneath the directory `base`, as an `O_PATH` descriptor: no symlink (nor magic
/// link) is followed and no component may leave `base` (`openat2`, Linux ≥ 5.6).
fn open_beneath(base: &Path, rel: &Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let root = nix::fcntl::open(
        base,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    openat2(&root, rel, how)
}

/// overlayfs option values escape `,` `:` and `\`.
fn escape_overlay(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The command as `execve` needs it: a name without `/` is looked up in the container's
/// PATH (ours is already the container's root).
fn resolve(arg0: &str, env: &[String]) -> String {
    if arg0.contains('/') {
        return arg0.to_string();
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = format!("{dir}/{arg0}");
        if let Ok(m) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    arg0.to_string()
}

/// `root` + `path` with every symlink resolved as if `root` were `/`: nothing can point the
/// result outside `root` (what filepath-securejoin does for runc).
pub fn secure_join(root: &Path, path: &str) -> Result<PathBuf, Error> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(Error::Setup(format!("too many symlinks in {path}")));
                }
                let target = std::fs::read_link(&candidate).map_err(io("readlink"))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(&part),
        }
    }
    Ok(root.join(resolved))
}

/// Create a directory (and parents) inside the root, never through a symlink out of it.
fn mkdir_in(root: &Path, path: &str) -> Result<PathBuf, Error> {
    let mut cur = String::new();
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        cur.push('/');
        cur.push_str(c);
        let p = secure_join(root, &cur)?;
        if !p.is_dir() {
            std::fs::create_dir(&p).map_err(io(format!("mkdir {cur}")))?;
        }
    }
    secure_join(root, path)
}

/// Create an empty file (for a file bind mount) inside the root.
fn touch_in(root: &Path, path: &str) -> Result<PathBuf, Error> {
    let parent = Path::new(path)
        .parent()
        .and_then(|p| p.to_str())
        .unwrap_or("/");
    mkdir_in(root, parent)?;
    let p = secure_join(root, path)?;
    if !p.exists() {
        std::fs::File::create(&p).map_err(io(format!("create {path}")))?;
    }
    Ok(p)
}

/// The pid as nix wants it.
pub fn pid(p: i32) -> Pid {
    Pid::from_raw(p)
}

#[cfg(test)]
mod tests {
    use super::open_beneath;
    use std::path::Path;

    #[test]
    fn open_beneath_follows_no_symlink_and_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("vol");
        std::fs::create_dir_all(base.join("dir/inner")).unwrap();
        std::os::unix::fs::symlink("/", base.join("escape")).unwrap();
        std::os::unix::fs::symlink("dir", base.join("inlink")).unwrap();
        assert!(open_beneath(&base, Path::new("dir/inner")).is_ok());
        // What a container swaps in after the kubelet's check: refused, not followed.
        assert_eq!(
            open_beneath(&base, Path::new("escape")).unwrap_err(),
            nix::Error::ELOOP
        );
        assert_eq!(
            open_beneath(&base, Path::new("escape/etc")).unwrap_err(),
            nix::Error::ELOOP
        );
        // Even a symlink that stays inside (the kubelet resolves those beforehand).
        assert!(open_beneath(&base, Path::new("inlink/inner")).is_err());
        // No way out by dot-dot.
        assert!(open_beneath(&base, Path::new("dir/../..")).is_err());
    }
}
