//! `hostPath` volumes with upstream's `type` checks (`volume/hostpath`): `""` checks nothing;
//! `DirectoryOrCreate`/`FileOrCreate` create what is missing (0755 directory, empty 0644
//! file); `Directory`, `File`, `Socket`, `CharDevice`, `BlockDevice` must already be that
//! kind. A mismatch is a `FailedMount` with upstream's `hostPath type check failed: <path> is
//! not a ...` and the pod waits in `ContainerCreating`, retried on every sync, as upstream.
//! Symlinks are followed (upstream `stat`s the path); admission decides who may use hostPath.

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::HostPathVolumeSource;

/// Checks (and for the `...OrCreate` types, creates) the host path; returns it.
pub fn prepare(hp: &HostPathVolumeSource) -> Result<PathBuf, String> {
    let path = Path::new(&hp.path);
    if !path.is_absolute() {
        return Err(format!("hostPath {:?} must be an absolute path", hp.path));
    }
    let kind = hp.type_.as_deref().unwrap_or("");
    let fail = |what: &str| format!("hostPath type check failed: {} is not {what}", hp.path);
    let meta = std::fs::metadata(path);
    match kind {
        "" => {}
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(fail("a directory")),
            Err(_) => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .create(path)
                    .map_err(|e| format!("hostPath {}: {e}", hp.path))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
            }
        },
        "Directory" => {
            if !meta.is_ok_and(|m| m.is_dir()) {
                return Err(fail("a directory"));
            }
        }
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(fail("a file")),
            Err(_) => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(|e| format!("hostPath {}: {e}", hp.path))?;
            }
        },
        "File" => {
            if !meta.is_ok_and(|m| m.is_file()) {
                return Err(fail("a file"));
            }
        }
        "Socket" => {
            if !meta.is_ok_and(|m| m.file_type().is_socket()) {
                return Err(fail("a socket file"));
            }
        }
        "CharDevice" => {
            if !meta.is_ok_and(|m| m.file_type().is_char_device()) {
                return Err(fail("a character device"));
            }
        }
        "BlockDevice" => {
            if !meta.is_ok_and(|m| m.file_type().is_block_device()) {
                return Err(fail("a block device"));
            }
        }
        other => return Err(format!("hostPath type {other:?} is not supported")),
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(path: &Path, kind: &str) -> HostPathVolumeSource {
        HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some(kind.to_string()),
        }
    }

    #[test]
    fn types_are_checked_and_created() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        assert!(prepare(&hp(&dir, "Directory")).is_err());
        assert_eq!(prepare(&hp(&dir, "DirectoryOrCreate")).unwrap(), dir);
        assert!(dir.is_dir());
        assert!(prepare(&hp(&dir, "Directory")).is_ok());
        let e = prepare(&hp(&dir, "File")).unwrap_err();
        assert_eq!(
            e,
            format!(
                "hostPath type check failed: {} is not a file",
                dir.display()
            )
        );
        let f = d.path().join("f");
        assert!(prepare(&hp(&f, "File")).is_err());
        prepare(&hp(&f, "FileOrCreate")).unwrap();
        assert!(f.is_file());
        assert!(prepare(&hp(&f, "DirectoryOrCreate")).is_err());
        assert!(prepare(&hp(&f, "Socket"))
            .unwrap_err()
            .ends_with("is not a socket file"));
        assert!(prepare(&hp(Path::new("/dev/null"), "CharDevice")).is_ok());
        assert!(prepare(&hp(Path::new("/dev/null"), "BlockDevice")).is_err());
        assert!(prepare(&hp(Path::new("relative"), "")).is_err());
        assert!(prepare(&hp(&f, "Bogus")).is_err());
    }
}
