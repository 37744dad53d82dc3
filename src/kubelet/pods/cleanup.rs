//! Removing a gone pod's directory (`<data dir>/pods/<uid>/`: its volumes, termination
//! files, the shim's state), upstream's orphaned-pod cleanup (`cleanupOrphanedPodDirs`):
//! every mount still below the directory — the tmpfs of secret, projected and memory
//! emptyDir volumes, anything a crashed shim left — is unmounted first, deepest first, and
//! the directory is removed only when none is left, so a removal can never walk into a
//! mounted filesystem and delete what is on it (upstream refuses the same way: "volume paths
//! are still present on disk"). Used when a pod's worker tears it down and for pods found
//! orphaned when the kubelet starts.
//!
//! PersistentVolumeClaim data is never below the pod directory (`pvc.rs` hands the runtime
//! the volume's own path), so it survives the pod.

use std::path::{Path, PathBuf};

/// Mount points at or below `dir`, from `/proc/self/mountinfo` (field 5, octal escapes
/// decoded), deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount everything below `dir`, then remove it. Refuses (and leaves the directory) when
/// a mount cannot be taken down.
pub fn remove_pod_dir(dir: &Path) -> Result<(), String> {
    // mountinfo has absolute, resolved paths.
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Ok(()); // gone already
    };
    let dir = dir.as_path();
    // Lazy unmounts, deepest first; a second pass catches mounts stacked on one another.
    for _ in 0..2 {
        for m in mounts_below(dir) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                tracing::debug!(path = %m.display(), error = %e, "cannot unmount below a pod directory");
            }
        }
    }
    let left = mounts_below(dir);
    if !left.is_empty() {
        return Err(format!(
            "{}: volume paths are still mounted ({}), not removing it",
            dir.display(),
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes() {
        assert_eq!(super::unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(super::unescape(r"/plain"), "/plain");
        assert_eq!(super::unescape(r"/end\04"), r"/end\04");
    }
}
