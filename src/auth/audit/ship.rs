//! Shipping: copying rotated audit files to another directory (a mounted archive, a WORM
//! volume, a directory a log collector drains) and recording that they are safe elsewhere.
//!
//! The sink never deletes history that has not been shipped (`writer`): only files at or
//! before the name in `DIR/audit.shipped` may be pruned. This module is what writes that
//! mark, so pruning (`--audit-log-maxbackup`) has an operator-controlled, verified path —
//! in the spirit of kube-apiserver's log backend handing rotation to an external shipper, but
//! fail-closed: a file counts as shipped only after its copy is durable and re-read equal.
//!
//! Invariants:
//! - only rotated files (`audit-*.log`, closed and never written again) are shipped, in chain
//!   order; the live `audit.log` never is;
//! - a file already present at the destination is left alone when it is byte-identical and
//!   is an error when it differs (evidence is never overwritten);
//! - the mark only ever advances, one file at a time, after that file's copy was `fsync`ed
//!   (file and directory) and its SHA-256 read back equal to the source's; it is written
//!   atomically (temporary file + rename);
//! - the copies form a chain `audit verify` accepts on its own (checked after copying).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::writer::{rotated_files, SHIPPED};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: already at the destination with different contents; refusing to overwrite it")]
    Conflict(PathBuf),
    #[error("{0}: the copy read back differs from the source")]
    Corrupt(PathBuf),
    #[error("the shipped copies do not verify: {0}")]
    Chain(super::verify::Finding),
    #[error("the destination is the audit directory itself")]
    SameDir,
}

/// What one `ship` did.
#[derive(Debug, Default)]
pub struct Shipped {
    /// Files copied by this call.
    pub copied: Vec<String>,
    /// Files found already shipped (identical at the destination).
    pub present: usize,
    /// The mark written to `audit.shipped` (the newest rotated file now shipped).
    pub mark: Option<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sha256_of(path: &Path) -> Result<[u8; 32], Error> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Copies `src` to `dest` durably (0600, via a temporary name) and checks the copy.
fn copy_one(src: &Path, dest: &Path) -> Result<(), Error> {
    let want = sha256_of(src)?;
    let tmp = dest.with_extension("log.partial");
    let mut input = File::open(src).map_err(io(src))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    std::io::copy(&mut input, &mut out).map_err(io(&tmp))?;
    out.flush().map_err(io(&tmp))?;
    out.sync_all().map_err(io(&tmp))?;
    drop(out);
    if sha256_of(&tmp)? != want {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Corrupt(dest.to_path_buf()));
    }
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn write_mark(audit_dir: &Path, name: &str) -> Result<(), Error> {
    let path = audit_dir.join(SHIPPED);
    let tmp = audit_dir.join(format!("{SHIPPED}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(format!("{name}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(audit_dir)
}

/// Ships every rotated file of `audit_dir` not yet at `dest` and advances the mark.
pub fn ship(audit_dir: &Path, dest: &Path) -> Result<Shipped, Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dest)
        .map_err(io(dest))?;
    let same = std::fs::canonicalize(audit_dir).map_err(io(audit_dir))?
        == std::fs::canonicalize(dest).map_err(io(dest))?;
    if same {
        return Err(Error::SameDir);
    }
    let mut done = Shipped::default();
    for file in rotated_files(audit_dir).map_err(io(audit_dir))? {
        let Some(name) = file.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let target = dest.join(&name);
        if target.exists() {
            if sha256_of(&target)? != sha256_of(&file)? {
                return Err(Error::Conflict(target));
            }
            done.present += 1;
        } else {
            copy_one(&file, &target)?;
            done.copied.push(name.clone());
        }
        // One file at a time: a failure later leaves the mark at the last good copy.
        write_mark(audit_dir, &name)?;
        done.mark = Some(name);
    }
    if done.mark.is_some() {
        // The copies must stand on their own as evidence: every line hashes, every file
        // continues the previous one. (An archive may start after history shipped earlier
        // to somewhere else; `audit verify` on it says so.)
        super::verify::verify(dest).map_err(Error::Chain)?;
    }
    Ok(done)
}
