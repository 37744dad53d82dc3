//! fsGroup ownership of pod volumes (upstream's `SetVolumeOwnership`,
//! `pkg/volume/volume_linux.go`): every file and directory of the volume gets the pod's
//! `fsGroup` as its group, group read (and write, unless the volume is read-only: configMap,
//! secret, projected, downwardAPI) permission, and directories also group execute and the
//! setgid bit, so files created later inherit the group. Symlinks are re-grouped but never
//! chmod'ed (that would change their target). `fsGroupChangePolicy: OnRootMismatch` skips the
//! walk when the volume's root already has the group, the permission bits and setgid;
//! `Always` (the default) walks every time.
//!
//! Invariant: the walk never follows a symlink, even one a container swaps in while it runs
//! (emptyDirs are shared with running containers when an agent restarts): every step is
//! relative to a directory descriptor opened with `O_NOFOLLOW`, files are changed through
//! descriptors of their own (`O_PATH|O_NOFOLLOW`, then `/proc/self/fd/N`), and a name that
//! turned into something else between the look and the open is skipped.
//! Depth is bounded (`MAX_DEPTH`); deeper trees are left as they are.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{fchownat, Gid};

const RW: u32 = 0o660;
const RO: u32 = 0o440;
const EXEC: u32 = 0o110;
const SETGID: u32 = 0o2000;
const MAX_DEPTH: usize = 64;

/// `fsGroupChangePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Always,
    OnRootMismatch,
}

impl Policy {
    pub fn from_pod(value: Option<&str>) -> Policy {
        match value {
            Some("OnRootMismatch") => Policy::OnRootMismatch,
            _ => Policy::Always,
        }
    }
}

/// Give the volume at `dir` to group `gid` (see the module docs).
pub fn apply(dir: &Path, gid: u32, policy: Policy, readonly: bool) -> Result<(), String> {
    let err = |e: nix::Error| format!("setting the fsGroup of {}: {e}", dir.display());
    let root = nix::fcntl::open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let st = fstat(&root).map_err(err)?;
    if policy == Policy::OnRootMismatch && !requires_change(&st, gid, readonly) {
        return Ok(());
    }
    walk(&root, st, gid, readonly, 0).map_err(err)
}

/// Upstream's `requiresPermissionChange`: the root's group, its permission bits (a superset
/// of what is needed) and setgid.
fn requires_change(st: &FileStat, gid: u32, readonly: bool) -> bool {
    let want = if readonly { RO } else { RW } | EXEC;
    st.st_gid != gid || (st.st_mode & want) != want || st.st_mode & SETGID == 0
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Group and mode of one object through its own descriptor.
fn change(fd: &OwnedFd, st: &FileStat, gid: u32, readonly: bool) -> nix::Result<()> {
    fchownat(
        fd,
        "",
        None,
        Some(Gid::from_raw(gid)),
        AtFlags::AT_EMPTY_PATH,
    )?;
    let mut mode = (st.st_mode & 0o7777) | if readonly { RO } else { RW };
    if kind(st) == SFlag::S_IFDIR {
        mode |= SETGID | EXEC;
    }
    if mode != st.st_mode & 0o7777 {
        // The descriptor may be O_PATH (no fchmod): chmod through its /proc link, which
        // names this very inode whatever happens to the path.
        std::fs::set_permissions(
            format!("/proc/self/fd/{}", fd.as_raw_fd()),
            std::fs::Permissions::from_mode(mode),
        )
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    }
    Ok(())
}

fn walk(dir: &OwnedFd, st: FileStat, gid: u32, readonly: bool, depth: usize) -> nix::Result<()> {
    change(dir, &st, gid, readonly)?;
    let names: Vec<std::ffi::OsString> =
        match std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) {
            Ok(rd) => rd.flatten().map(|e| e.file_name()).collect(),
            Err(e) => return Err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        };
    for name in names {
        let name = name.as_os_str();
        let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        match kind(&st) {
            SFlag::S_IFLNK => {
                let _ = fchownat(
                    dir,
                    name,
                    None,
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                );
            }
            SFlag::S_IFDIR => {
                if depth >= MAX_DEPTH {
                    continue;
                }
                let flags =
                    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
                // Swapped for a symlink or a file since the look: ELOOP/ENOTDIR, skipped.
                let Ok(child) = openat(dir, name, flags, Mode::empty()) else {
                    continue;
                };
                let Ok(st) = fstat(&child) else { continue };
                walk(&child, st, gid, readonly, depth + 1)?;
            }
            _ => {
                let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let Ok(fd) = openat(dir, name, flags, Mode::empty()) else {
                    continue;
                };
                let Ok(st) = fstat(&fd) else { continue };
                match kind(&st) {
                    // Became a symlink or a directory since the look: leave it.
                    SFlag::S_IFLNK | SFlag::S_IFDIR => continue,
                    _ => change(&fd, &st, gid, readonly)?,
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn groups_modes_and_never_follows_symlinks() {
        // Group changes need no root when the group is one of ours.
        let gid = nix::unistd::getegid().as_raw();
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("vol");
        std::fs::create_dir_all(v.join("sub")).unwrap();
        std::fs::write(v.join("f"), "x").unwrap();
        std::fs::set_permissions(v.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, "secret").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&outside, v.join("sub/link")).unwrap();
        std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o755)).unwrap();

        let st = nix::sys::stat::stat(&v).unwrap();
        assert!(requires_change(&st, gid, false));
        apply(&v, gid, Policy::Always, false).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&v), 0o2775);
        assert_eq!(mode(&v.join("sub")), 0o2775);
        assert_eq!(mode(&v.join("f")), 0o660);
        assert_eq!(std::fs::metadata(v.join("f")).unwrap().gid(), gid);
        // The symlink's target outside the volume is untouched.
        assert_eq!(mode(&outside), 0o600);
        let st = nix::sys::stat::stat(&v).unwrap();
        assert!(!requires_change(&st, gid, false));

        // Read-only volumes get group read, not write; OnRootMismatch skips a matching root.
        std::fs::set_permissions(v.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        apply(&v, gid, Policy::OnRootMismatch, false).unwrap();
        assert_eq!(mode(&v.join("f")), 0o600);
        apply(&v, gid, Policy::Always, true).unwrap();
        assert_eq!(mode(&v.join("f")), 0o640);
        // A volume root that is a symlink is refused.
        std::os::unix::fs::symlink(&v, d.path().join("vlink")).unwrap();
        assert!(apply(&d.path().join("vlink"), gid, Policy::Always, false).is_err());
    }
}
