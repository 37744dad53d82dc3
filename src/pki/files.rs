//! Writing key material safely: private directories, 0600 files, atomic replace.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::Error;

pub fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        Error::Io {
            action: "set permissions on",
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// Write `data` to `path` with `mode`, atomically: a reader sees the old file or the new one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let io = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create"))?;
    // The mode given to open() is filtered by the umask; set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("set permissions on"))?;
    f.write_all(data).map_err(io("write"))?;
    f.sync_all().map_err(io("sync"))?;
    std::fs::rename(&tmp, path).map_err(io("rename into"))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Read a file if it exists.
pub fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Read a private key, refusing one that others can read.
pub fn read_private_key(path: &Path) -> Result<Option<String>, Error> {
    let Some(pem) = read_optional(path)? else {
        return Ok(None);
    };
    let mode = std::fs::metadata(path)
        .map_err(|source| Error::Io {
            action: "stat",
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(Some(pem))
}
