//! Unpacking one layer into overlayfs' lower-directory format, verifying its digests on the
//! way (one pass: the compressed bytes and the uncompressed tar are both hashed as they
//! stream through).
//!
//! OCI whiteouts become what overlayfs understands natively, so layers can be unpacked
//! independently and shared: `.wh.NAME` → a 0/0 character device `NAME`; `.wh..wh..opq` →
//! the xattr `trusted.overlay.opaque=y` on its directory. An opaque whiteout applies to the
//! directory wherever it appears in the layer (the OCI spec; it hides only lower layers,
//! never entries of its own layer, which is exactly overlayfs' semantics). Paths with `..`
//! are skipped and nothing is written outside the layer directory (the `tar` crate's
//! `unpack_in` checks parents and hard-link targets; whiteouts are checked here).

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io_err, Error};

/// A reader that hashes everything read through it.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    pub bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    /// Read to EOF (the tar reader stops at the end-of-archive blocks) and give the digest.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{:x}", self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// sha256 of a whole file.
pub fn file_digest(path: &Path) -> Result<String, Error> {
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    Hashing::new(io::BufReader::new(f))
        .finish()
        .map_err(io_err(path))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compression {
    None,
    Gzip,
}

/// Sniff gzip by its magic; zstd is refused with a clear message.
pub fn sniff(path: &Path) -> Result<Compression, Error> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io_err(path))?;
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Ok(Compression::Gzip)
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Err(Error::Invalid(
            "zstd-compressed layers are not supported yet".into(),
        ))
    } else {
        Ok(Compression::None)
    }
}

/// What unpacking saw.
pub struct Unpacked {
    pub blob_digest: String,
    pub diff_id: String,
}

/// Unpack `blob` into the new directory `dst`, hashing the blob and the uncompressed tar.
pub fn unpack(blob: &Path, dst: &Path) -> Result<Unpacked, Error> {
    let comp = sniff(blob)?;
    let f = std::fs::File::open(blob).map_err(io_err(blob))?;
    let mut outer = Hashing::new(io::BufReader::with_capacity(1 << 16, f));
    let diff_id = {
        let inner: Box<dyn Read + '_> = match comp {
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut outer)),
            Compression::None => Box::new(&mut outer),
        };
        let mut tar_hash = Hashing::new(inner);
        unpack_tar(&mut tar_hash, dst)?;
        tar_hash
            .finish()
            .map_err(|e| Error::Invalid(format!("layer {}: cannot read: {e}", blob.display())))?
    };
    let blob_digest = outer.finish().map_err(io_err(blob))?;
    Ok(Unpacked {
        blob_digest,
        diff_id,
    })
}

/// Both digests of a layer blob without unpacking it (for a layer already in the store).
pub fn digests(blob: &Path) -> Result<Unpacked, Error> {
    let comp = sniff(blob)?;
    let f = std::fs::File::open(blob).map_err(io_err(blob))?;
    let mut outer = Hashing::new(io::BufReader::with_capacity(1 << 16, f));
    let diff_id = {
        let inner: Box<dyn Read + '_> = match comp {
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut outer)),
            Compression::None => Box::new(&mut outer),
        };
        Hashing::new(inner)
            .finish()
            .map_err(|e| Error::Invalid(format!("layer {}: cannot read: {e}", blob.display())))?
    };
    let blob_digest = outer.finish().map_err(io_err(blob))?;
    Ok(Unpacked {
        blob_digest,
        diff_id,
    })
}

fn unpack_tar<R: Read>(r: R, dst: &Path) -> Result<(), Error> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let bad = |e: io::Error| Error::Invalid(format!("layer is not a valid tar archive: {e}"));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let Some(rel) = clean(&path) else {
            continue;
        };
        let name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = rel.parent().unwrap_or(Path::new(""));
            let dir = safe_dir(dst, parent)?;
            if hidden == ".wh..opq" {
                set_opaque(&dir)?;
            } else if !hidden.is_empty() && hidden != "." && hidden != ".." {
                whiteout(&dir.join(hidden))?;
            }
            continue;
        }
        entry
            .unpack_in(dst)
            .map_err(|e| Error::Invalid(format!("layer entry {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The path without `.`/root components, or None if it has `..` (skipped, as tar does).
fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Create `rel` under `root` as real directories (never through a symlink) and return it.
fn safe_dir(root: &Path, rel: &Path) -> Result<PathBuf, Error> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "layer whiteout below {} which is not a directory",
                    rel.display()
                )))
            }
            Err(_) => std::fs::create_dir(&cur).map_err(io_err(&cur))?,
        }
    }
    Ok(cur)
}

fn set_opaque(dir: &Path) -> Result<(), Error> {
    xattr::set(dir, "trusted.overlay.opaque", b"y").map_err(io_err(dir))
}

fn whiteout(path: &Path) -> Result<(), Error> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            std::fs::remove_dir_all(path).map_err(io_err(path))?;
        } else {
            std::fs::remove_file(path).map_err(io_err(path))?;
        }
    }
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(|e| io_err(path)(e.into()))
}
