//! `subPath` and `subPathExpr` of volume mounts, safe against symlink races (CVE-2021-25741;
//! upstream's `makeMounts` and `pkg/volume/util/subpath/subpath_linux.go`).
//!
//! - `subPathExpr` is expanded with the container's environment (`$(VAR)`); a variable
//!   missing or empty is an error (`missing value for VAR`), as upstream.
//! - The path must be relative and hold no `..` (upstream's messages).
//! - Symlinks inside the volume are followed (upstream's `EvalSymlinks`), but the result must
//!   stay inside the volume; a missing path is created directory by directory with the volume
//!   root's mode, never following a symlink (upstream's `SafeMakeDir`).
//! - The kubelet's answer is only a relative path: the runtime opens it beneath the volume
//!   root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` in the container's mount
//!   namespace and bind-mounts the descriptor (`/proc/self/fd/N`), so a container of the same
//!   pod that swaps a component for a symlink after this check makes the start fail instead
//!   of mounting a host path (`runtime::container`).
//!
//! The user sees upstream's generic messages (`failed to prepare subPath for volumeMount ...`,
//! reason `CreateContainerConfigError`); the detail goes to the agent's log only, since it
//! could describe the host's filesystem.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::VolumeMount;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, mkdirat, Mode};

/// The subPath of `vm` (`subPathExpr` expanded with `env`, `K=V` strings), validated; `None`
/// when the mount has none.
pub fn of(vm: &VolumeMount, env: &[String]) -> Result<Option<String>, String> {
    let sub = match vm.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        Some(expr) => {
            let vars: BTreeMap<String, String> = env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut missing = std::collections::BTreeSet::new();
            for name in referenced(expr) {
                if vars.get(&name).is_none_or(|v| v.is_empty()) {
                    missing.insert(name);
                }
            }
            if !missing.is_empty() {
                let names: Vec<String> = missing.into_iter().collect();
                return Err(format!("missing value for {}", names.join(", ")));
            }
            super::container_spec::expand(expr, &vars)
        }
        None => vm.sub_path.clone().unwrap_or_default(),
    };
    if sub.is_empty() {
        return Ok(None);
    }
    if Path::new(&sub).is_absolute() {
        return Err(format!(
            "error SubPath `{sub}` must not be an absolute path"
        ));
    }
    if Path::new(&sub)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(format!(
            "unable to provision SubPath `{sub}`: must not contain '..'"
        ));
    }
    Ok(Some(sub))
}

/// The `$(NAME)` references of an expression (`$$` escapes).
fn referenced(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = expr[i + 2..].find(')') {
                    out.push(expr[i + 2..i + 2 + end].to_string());
                    i += 3 + end;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// Resolve `sub` beneath `volume` (see the module docs): the path relative to the volume.
pub fn resolve(volume: &Path, sub: &str) -> Result<PathBuf, String> {
    let root =
        std::fs::canonicalize(volume).map_err(|e| format!("volume {}: {e}", volume.display()))?;
    let target = match std::fs::canonicalize(volume.join(sub)) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_dirs(&root, sub)?;
            std::fs::canonicalize(volume.join(sub)).map_err(|e| format!("subpath {sub}: {e}"))?
        }
        Err(e) => return Err(format!("evalSymlinks of subpath {sub} failed: {e}")),
    };
    let rel = target.strip_prefix(&root).map_err(|_| {
        format!(
            "subpath {:?} not within volume path {:?}",
            target.display(),
            root.display()
        )
    })?;
    Ok(rel.to_path_buf())
}

/// Create the missing directories of `sub` under `root` with the root's mode, never
/// following a symlink (an existing one is an error).
fn make_dirs(root: &Path, sub: &str) -> Result<(), String> {
    let err = |what: &str, e: nix::Error| format!("subpath {sub}: {what}: {e}");
    let mode = std::fs::metadata(root)
        .map_err(|e| format!("volume {}: {e}", root.display()))?
        .permissions()
        .mode()
        & 0o7777;
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let mut cur: OwnedFd =
        nix::fcntl::open(root, dir_flags, Mode::empty()).map_err(|e| err("open the volume", e))?;
    for c in Path::new(sub).components() {
        let Component::Normal(name) = c else {
            continue;
        };
        let next = match openat(&cur, name, dir_flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => {
                match mkdirat(&cur, name, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(nix::Error::EEXIST) => {}
                    Err(e) => return Err(err("mkdir", e)),
                }
                let fd = openat(&cur, name, dir_flags, Mode::empty())
                    .map_err(|e| err("open the new directory", e))?;
                // mkdirat applies the umask.
                fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| err("chmod", e))?;
                fd
            }
            // O_NOFOLLOW|O_DIRECTORY on a symlink: ELOOP, or ENOTDIR on some kernels.
            Err(nix::Error::ELOOP | nix::Error::ENOTDIR) => {
                return Err(format!(
                    "subpath {sub}: unexpected symlink (or file) found at {}",
                    name.to_string_lossy()
                ))
            }
            Err(e) => return Err(err("open", e)),
        };
        cur = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(sub: Option<&str>, expr: Option<&str>) -> VolumeMount {
        VolumeMount {
            name: "v".into(),
            mount_path: "/m".into(),
            sub_path: sub.map(str::to_string),
            sub_path_expr: expr.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn expansion_and_validation() {
        let env = vec!["POD=web-0".to_string(), "EMPTY=".to_string()];
        assert_eq!(
            of(&vm(Some("a/b"), None), &env).unwrap().as_deref(),
            Some("a/b")
        );
        assert_eq!(of(&vm(None, None), &env).unwrap(), None);
        assert_eq!(
            of(&vm(None, Some("logs/$(POD)")), &env).unwrap().as_deref(),
            Some("logs/web-0")
        );
        assert_eq!(
            of(&vm(None, Some("$(NOPE)/$(EMPTY)/$(POD)")), &env).unwrap_err(),
            "missing value for EMPTY, NOPE"
        );
        assert_eq!(
            of(&vm(None, Some("$$(NOPE)")), &env).unwrap().as_deref(),
            Some("$(NOPE)")
        );
        assert!(of(&vm(Some("/etc"), None), &env)
            .unwrap_err()
            .contains("must not be an absolute path"));
        assert!(of(&vm(Some("a/../../b"), None), &env)
            .unwrap_err()
            .contains("must not contain '..'"));
    }

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("vol");
        std::fs::create_dir(&v).unwrap();
        std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o777)).unwrap();
        // Created when missing, with the volume's mode.
        assert_eq!(resolve(&v, "new/deeper").unwrap(), Path::new("new/deeper"));
        let m = std::fs::metadata(v.join("new/deeper"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o777);
        // A symlink that stays inside is followed.
        std::os::unix::fs::symlink("new", v.join("inside")).unwrap();
        assert_eq!(
            resolve(&v, "inside/deeper").unwrap(),
            Path::new("new/deeper")
        );
        // One that leaves the volume is refused, whether its target exists or not.
        std::os::unix::fs::symlink("/", v.join("escape")).unwrap();
        assert!(resolve(&v, "escape")
            .unwrap_err()
            .contains("not within volume path"));
        std::os::unix::fs::symlink("/nonexistent-rampart", v.join("dangling")).unwrap();
        assert!(resolve(&v, "dangling/x").unwrap_err().contains("symlink"));
    }
}
