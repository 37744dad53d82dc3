//! The local, content-addressed image store (what containerd's content store and overlayfs
//! snapshotter do for k3s, reduced to what we need).
//!
//! Layout under `ROOT` (the agent's `DATA_DIR/content`):
//! - `blobs/sha256/<hex>`: manifests and image configs, each verified against its digest;
//! - `layers/sha256/<diff-id hex>/`: every layer unpacked once, in overlayfs' own format
//!   (a whiteout is a 0/0 character device, an opaque directory carries
//!   `trusted.overlay.opaque=y`), shared by every image that has it;
//! - `images.json`: the image records (names, config digest, layer diff ids, config);
//! - `tmp/`: staging, emptied at every open; `lock`: an exclusive `flock` held by writers.
//!
//! Invariants: nothing enters `blobs/` or `layers/` before its digest was checked; a layer
//! directory appears by one `rename` of a fully unpacked directory; `images.json` is
//! replaced atomically and last, so a failed import leaves the store as it was.

pub mod import;
pub mod layer;
pub mod reference;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("image {0:?} not found")]
    NotFound(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a container needs from the image config (`config` in the OCI image config).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One image in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The config digest (`sha256:<hex>`), the image's identity as `docker images` shows it.
    pub id: String,
    /// Normalised references (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// Manifest digest when the archive had one (OCI layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Layer diff ids, bottom first.
    pub layers: Vec<String>,
    pub config: ImageConfig,
    pub architecture: String,
    /// Bytes of the unpacked layers (as reported by `ls`).
    pub size: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: Vec<Image>,
}

/// An open store. Readers use `list`/`resolve`; writers take the lock.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An exclusive lock on the store (released on drop).
pub struct Lock {
    _file: File,
}

impl Store {
    /// Open (creating) the store under `root`; clears stale staging left by a crash.
    pub fn open(root: &Path) -> Result<Store, Error> {
        for d in ["blobs/sha256", "layers/sha256", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        {
            let _l = store.lock()?;
            let tmp = root.join("tmp");
            if let Ok(rd) = std::fs::read_dir(&tmp) {
                for e in rd.flatten() {
                    let _ = remove_tree(&e.path());
                }
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock(&self) -> Result<Lock, Error> {
        let p = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        // SAFETY: flock(2) on a descriptor we own; blocks until the other writer is done.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Error::Io {
                path: p,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Lock { _file: file })
    }

    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.root.join("layers/sha256").join(hex)
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    pub(crate) fn tmp_dir(&self, what: &str) -> Result<PathBuf, Error> {
        let p = self
            .root
            .join("tmp")
            .join(format!("{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&p).map_err(io_err(&p))?;
        Ok(p)
    }

    pub fn list(&self) -> Result<Vec<Image>, Error> {
        Ok(self.read_index()?.images)
    }

    /// Find an image by reference (normalised as docker does), id or id prefix (≥ 6 hex).
    pub fn resolve(&self, reference: &str) -> Result<Image, Error> {
        let images = self.list()?;
        find(&images, reference)
            .cloned()
            .ok_or_else(|| Error::NotFound(reference.to_string()))
    }

    /// Remove an image (by name: just that name unless it is the last one).
    pub fn remove(&self, reference: &str) -> Result<Vec<String>, Error> {
        let _l = self.lock()?;
        let mut idx = self.read_index()?;
        let Some(pos) = idx
            .images
            .iter()
            .position(|i| find(std::slice::from_ref(i), reference).is_some())
        else {
            return Err(Error::NotFound(reference.to_string()));
        };
        let mut removed = Vec::new();
        let norm = reference::normalize(reference).ok();
        let img = &mut idx.images[pos];
        if let Some(n) = norm.filter(|n| img.names.contains(n) && img.names.len() > 1) {
            img.names.retain(|x| x != &n);
            removed.push(format!("Untagged: {n}"));
            self.write_index(&idx)?;
            return Ok(removed);
        }
        let img = idx.images.remove(pos);
        for n in &img.names {
            removed.push(format!("Untagged: {n}"));
        }
        removed.push(format!("Deleted: {}", img.id));
        self.write_index(&idx)?;
        // Layers and blobs no other image references.
        let used: std::collections::HashSet<&String> =
            idx.images.iter().flat_map(|i| i.layers.iter()).collect();
        for l in img.layers.iter().filter(|l| !used.contains(l)) {
            let _ = remove_tree(&self.layer_dir(l));
        }
        if !idx.images.iter().any(|i| i.id == img.id) {
            let _ = std::fs::remove_file(self.blob_path(&img.id));
        }
        if let Some(m) = &img.manifest_digest {
            if !idx
                .images
                .iter()
                .any(|i| i.manifest_digest.as_ref() == Some(m))
            {
                let _ = std::fs::remove_file(self.blob_path(m));
            }
        }
        Ok(removed)
    }

    fn read_index(&self) -> Result<Index, Error> {
        let p = self.root.join("images.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    fn write_index(&self, idx: &Index) -> Result<(), Error> {
        let p = self.root.join("images.json");
        let tmp = self.root.join("images.json.tmp");
        let body = serde_json::to_vec_pretty(idx).map_err(|e| Error::Invalid(e.to_string()))?;
        write_synced(&tmp, &body)?;
        std::fs::rename(&tmp, &p).map_err(io_err(&p))?;
        Ok(())
    }

    /// Add (or replace) images; names move to the newest image that claims them, as
    /// `docker load` does. Caller holds the lock.
    pub(crate) fn commit(&self, new: Vec<Image>) -> Result<(), Error> {
        let mut idx = self.read_index()?;
        for img in new {
            for other in idx.images.iter_mut() {
                other.names.retain(|n| !img.names.contains(n));
            }
            if let Some(existing) = idx.images.iter_mut().find(|i| i.id == img.id) {
                for n in img.names {
                    if !existing.names.contains(&n) {
                        existing.names.push(n);
                    }
                }
                if existing.manifest_digest.is_none() {
                    existing.manifest_digest = img.manifest_digest;
                }
            } else {
                idx.images.push(img);
            }
        }
        // An image that lost all its names stays (by id), like docker's dangling images.
        self.write_index(&idx)
    }

    /// Bytes used below a directory (reported by `images ls`).
    pub fn dir_size(path: &Path) -> u64 {
        let mut total = 0;
        let mut stack = vec![path.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if let Ok(m) = e.metadata() {
                    if m.is_dir() {
                        stack.push(e.path());
                    } else {
                        total += m.len();
                    }
                }
            }
        }
        total
    }
}

fn find<'a>(images: &'a [Image], reference: &str) -> Option<&'a Image> {
    let r = reference.strip_prefix("sha256:").unwrap_or(reference);
    if r.len() >= 6 && r.chars().all(|c| c.is_ascii_hexdigit()) {
        if let Some(i) = images
            .iter()
            .find(|i| i.id.trim_start_matches("sha256:").starts_with(r))
        {
            return Some(i);
        }
    }
    let norm = reference::normalize(reference).ok()?;
    images.iter().find(|i| i.names.contains(&norm))
}

pub(crate) fn write_synced(path: &Path, body: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(body).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

/// Remove a directory tree that may hold read-only directories (as layers do).
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A name → value map of images for `ls` output.
pub fn table(images: &[Image]) -> Vec<BTreeMap<&'static str, String>> {
    images
        .iter()
        .flat_map(|i| {
            let names = if i.names.is_empty() {
                vec!["<none>".to_string()]
            } else {
                i.names.clone()
            };
            names.into_iter().map(move |n| {
                let mut m = BTreeMap::new();
                m.insert("name", n);
                m.insert(
                    "id",
                    i.id.trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect(),
                );
                m.insert("size", human_size(i.size));
                m
            })
        })
        .collect()
}

fn human_size(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1}KiB", b as f64 / 1024.0)
    }
}
