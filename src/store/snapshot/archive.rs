//! The plaintext inside a sealed snapshot: a sequence of file records and an end record.
//!
//! ```text
//! file: 1 | path length u16 | path | mode u32 | size u64 | bytes
//! end:  2
//! ```
//! Paths are relative, `/`-separated, made only of normal components and under one of the
//! roots a server directory has (`store/`, `pki/`, `encryption/`): a snapshot can never write
//! outside the directory it is restored into, whoever made it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::Error;

const FILE: u8 = 1;
const END: u8 = 2;
pub(crate) const ROOTS: &[&str] = &["store", "pki", "encryption"];
const MAX_PATH: usize = 1024;

pub(crate) fn write_file(
    out: &mut impl FnMut(&[u8]) -> Result<(), Error>,
    path: &str,
    mode: u32,
    contents: &[u8],
) -> Result<(), Error> {
    check_path(path)?;
    out(&[FILE])?;
    out(&(path.len() as u16).to_be_bytes())?;
    out(path.as_bytes())?;
    out(&mode.to_be_bytes())?;
    out(&(contents.len() as u64).to_be_bytes())?;
    out(contents)
}

pub(crate) fn write_end(out: &mut impl FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
    out(&[END])
}

/// A relative path inside one of [`ROOTS`], as a `PathBuf` to join onto a directory.
pub(crate) fn check_path(path: &str) -> Result<PathBuf, Error> {
    let bad = |why: &str| Error::Format(format!("unsafe path {path:?} in snapshot: {why}"));
    if path.is_empty() || path.len() > MAX_PATH {
        return Err(bad("empty or too long"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(bad("forbidden character"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 || !ROOTS.contains(&segments[0]) {
        return Err(bad("not a file under store/, pki/ or encryption/"));
    }
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(bad("only plain names are allowed"));
    }
    let p = Path::new(path);
    Ok(p.to_path_buf())
}

/// One record read back.
pub(crate) enum Record {
    File {
        path: PathBuf,
        mode: u32,
        contents: Vec<u8>,
    },
    End,
}

pub(crate) fn read_record(r: &mut impl Read, limit: u64) -> Result<Record, Error> {
    let mut tag = [0u8; 1];
    read(r, &mut tag)?;
    match tag[0] {
        END => Ok(Record::End),
        FILE => {
            let mut len = [0u8; 2];
            read(r, &mut len)?;
            let len = u16::from_be_bytes(len) as usize;
            if len > MAX_PATH {
                return Err(Error::Format("path too long".into()));
            }
            let mut path = vec![0u8; len];
            read(r, &mut path)?;
            let path =
                String::from_utf8(path).map_err(|_| Error::Format("path is not UTF-8".into()))?;
            let path = check_path(&path)?;
            let mut mode = [0u8; 4];
            read(r, &mut mode)?;
            let mut size = [0u8; 8];
            read(r, &mut size)?;
            let size = u64::from_be_bytes(size);
            // The sealed file bounds what it can contain: a record claiming more is a lie.
            if size > limit {
                return Err(Error::Format(format!(
                    "record {} claims {size} bytes, more than the snapshot holds",
                    path.display()
                )));
            }
            let mut contents = Vec::with_capacity(size as usize);
            r.take(size)
                .read_to_end(&mut contents)
                .map_err(io_or_format)?;
            if contents.len() as u64 != size {
                return Err(Error::Format("the snapshot is truncated".into()));
            }
            Ok(Record::File {
                path,
                mode: u32::from_be_bytes(mode),
                contents,
            })
        }
        other => Err(Error::Format(format!("unknown record type {other}"))),
    }
}

fn io_or_format(e: std::io::Error) -> Error {
    // The plaintext reader reports authentication failures as `Other` wrapping our Error.
    match e.into_inner() {
        Some(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::Format(other.to_string()),
        },
        None => Error::Format("the snapshot is truncated".into()),
    }
}

fn read(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Error> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Format("the snapshot is truncated".into()),
        _ => io_or_format(e),
    })
}

/// Writes `contents` to `dir/path`, creating parents 0700; the file is owner-only.
pub(crate) fn materialize(
    dir: &Path,
    path: &Path,
    mode: u32,
    contents: &[u8],
) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let target = dir.join(path);
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o700)
        .open(&target)?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_server_directory() {
        for good in [
            "store/CURRENT",
            "pki/ca.key",
            "encryption/keys.json",
            "pki/a/b.crt",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "store/../../x",
            "store/./x",
            "other/x",
            "store",
            "pki//x/../y",
            "audit/log",
            "store\\x",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
