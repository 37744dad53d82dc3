//! Air-gap import of image archives: `docker save` (the legacy `manifest.json` layout, and
//! the OCI layout with `index.json` + `blobs/sha256/` that docker ≥ 25 writes alongside it)
//! and OCI image-layout archives (`skopeo copy oci-archive:`, `buildah push`).
//!
//! The archive is first extracted into the store's staging directory (paths with `..` are
//! skipped; every file the import opens is resolved and must stay inside the staging
//! directory, so a symlink in the archive cannot make us read host files). Then every
//! manifest, config and layer is verified: the manifest and config against their
//! descriptors' digests, each layer blob against its digest and its uncompressed content
//! against the config's `rootfs.diff_ids`. Only then do layers and blobs enter the store
//! and the index change; any failure removes what this import added.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::layer::{self, file_digest};
use super::{io_err, reference, remove_tree, Error, Image, ImageConfig, Store};

/// The architecture name the OCI spec uses for this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: ImageConfig,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// One image found in an archive, verified except for its layers.
struct Candidate {
    names: Vec<String>,
    manifest_digest: Option<String>,
    manifest_path: Option<PathBuf>,
    config_path: PathBuf,
    config_digest: String,
    config: ConfigFile,
    /// (blob path, expected blob digest if the layout names one)
    layers: Vec<(PathBuf, Option<String>)>,
}

/// Import every image in the archive `file`; returns the imported images.
pub fn import(store: &Store, file: &Path) -> Result<Vec<Image>, Error> {
    let _lock = store.lock()?;
    let staging = store.tmp_dir("import")?;
    let result = import_staged(store, file, &staging);
    let _ = remove_tree(&staging);
    result
}

fn import_staged(store: &Store, file: &Path, staging: &Path) -> Result<Vec<Image>, Error> {
    extract(file, staging)?;
    let candidates = if staging.join("index.json").is_file() {
        let tags = docker_tags(staging);
        oci_layout(staging, &tags)?
    } else if staging.join("manifest.json").is_file() {
        docker_legacy(staging)?
    } else {
        return Err(Error::Invalid(
            "not an image archive: neither index.json (OCI layout) nor manifest.json (docker save) found".into(),
        ));
    };
    if candidates.is_empty() {
        return Err(Error::Invalid("the archive holds no image".into()));
    }
    let mut added_layers: Vec<PathBuf> = Vec::new();
    let mut added_blobs: Vec<PathBuf> = Vec::new();
    let r = commit_candidates(
        store,
        staging,
        candidates,
        &mut added_layers,
        &mut added_blobs,
    );
    if r.is_err() {
        for p in added_layers {
            let _ = remove_tree(&p);
        }
        for p in added_blobs {
            let _ = std::fs::remove_file(p);
        }
    }
    r
}

fn commit_candidates(
    store: &Store,
    staging: &Path,
    candidates: Vec<Candidate>,
    added_layers: &mut Vec<PathBuf>,
    added_blobs: &mut Vec<PathBuf>,
) -> Result<Vec<Image>, Error> {
    let mut images = Vec::new();
    for c in candidates {
        if c.config.architecture != host_arch() {
            return Err(Error::Invalid(format!(
                "image {} is for architecture {:?}, this node is {}",
                c.names
                    .first()
                    .map(String::as_str)
                    .unwrap_or(&c.config_digest),
                c.config.architecture,
                host_arch()
            )));
        }
        if c.layers.len() != c.config.rootfs.diff_ids.len() {
            return Err(Error::Invalid(format!(
                "image {}: {} layers but the config lists {} diff_ids",
                c.config_digest,
                c.layers.len(),
                c.config.rootfs.diff_ids.len()
            )));
        }
        let mut size = 0;
        for ((blob, want_blob), diff_id) in c.layers.iter().zip(&c.config.rootfs.diff_ids) {
            let dst = store.layer_dir(diff_id);
            if dst.is_dir() {
                // Already unpacked (verified then); this archive's blob must still be what
                // it claims, or the archive is lying and is refused as a whole.
                let d = layer::digests(blob)?;
                if let Some(want) = want_blob.as_ref().filter(|w| **w != d.blob_digest) {
                    return Err(lie(blob, staging, want, &d.blob_digest));
                }
                if &d.diff_id != diff_id {
                    return Err(Error::Invalid(format!(
                        "layer {}: content digest {} does not match the config's diff_id {diff_id}",
                        rel(blob, staging),
                        d.diff_id
                    )));
                }
                size += Store::dir_size(&dst);
                continue;
            }
            let tmp = store.tmp_dir("layer")?;
            let u = match layer::unpack(blob, &tmp) {
                Ok(u) => u,
                Err(e) => {
                    let _ = remove_tree(&tmp);
                    return Err(e);
                }
            };
            let check = if want_blob.as_ref().is_some_and(|w| w != &u.blob_digest) {
                Err(lie(
                    blob,
                    staging,
                    want_blob.as_deref().unwrap_or(""),
                    &u.blob_digest,
                ))
            } else if &u.diff_id != diff_id {
                Err(Error::Invalid(format!(
                    "layer {}: content digest {} does not match the config's diff_id {diff_id}",
                    rel(blob, staging),
                    u.diff_id
                )))
            } else {
                Ok(())
            };
            if let Err(e) = check {
                let _ = remove_tree(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
            added_layers.push(dst.clone());
            size += Store::dir_size(&dst);
        }
        let blobs = [
            Some((&c.config_path, &c.config_digest)),
            c.manifest_path.as_ref().zip(c.manifest_digest.as_ref()),
        ];
        for (src, digest) in blobs.into_iter().flatten() {
            let dst = store.blob_path(digest);
            if !dst.exists() {
                std::fs::copy(src, &dst).map_err(io_err(&dst))?;
                added_blobs.push(dst);
            }
        }
        images.push(Image {
            id: c.config_digest,
            names: c.names,
            manifest_digest: c.manifest_digest,
            layers: c.config.rootfs.diff_ids,
            config: c.config.config,
            architecture: c.config.architecture,
            size,
        });
    }
    store.commit(images.clone())?;
    Ok(images)
}

fn lie(blob: &Path, staging: &Path, want: &str, got: &str) -> Error {
    Error::Invalid(format!(
        "blob {} has digest {got}, expected {want}",
        rel(blob, staging)
    ))
}

fn rel(p: &Path, staging: &Path) -> String {
    p.strip_prefix(staging).unwrap_or(p).display().to_string()
}

/// Extract the (possibly gzip-compressed) archive into `staging`.
fn extract(file: &Path, staging: &Path) -> Result<(), Error> {
    let comp = layer::sniff(file)?;
    let f = std::fs::File::open(file).map_err(io_err(file))?;
    let r: Box<dyn std::io::Read> = match comp {
        layer::Compression::Gzip => {
            Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
        }
        layer::Compression::None => Box::new(std::io::BufReader::new(f)),
    };
    let mut ar = tar::Archive::new(r);
    let bad = |e: std::io::Error| {
        Error::Invalid(format!(
            "{}: not a readable tar archive (truncated?): {e}",
            file.display()
        ))
    };
    let mut n = 0usize;
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            continue;
        }
        entry.unpack_in(staging).map_err(bad)?;
        n += 1;
    }
    if n == 0 {
        return Err(Error::Invalid(format!(
            "{}: empty or not a tar archive",
            file.display()
        )));
    }
    Ok(())
}

/// Open a path named by the archive: it must resolve (symlinks included) inside `staging`.
fn inside(staging: &Path, name: &str) -> Result<PathBuf, Error> {
    let p = staging.join(name.trim_start_matches('/'));
    let canon = p.canonicalize().map_err(|_| {
        Error::Invalid(format!(
            "the archive names {name:?}, which it does not contain (truncated?)"
        ))
    })?;
    let root = staging.canonicalize().map_err(io_err(staging))?;
    if !canon.starts_with(&root) || !canon.is_file() {
        return Err(Error::Invalid(format!(
            "the archive names {name:?}, which is outside it or not a file"
        )));
    }
    Ok(canon)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T, Error> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.len() > 8 << 20 {
        return Err(Error::Invalid(format!("{what} is larger than 8 MiB")));
    }
    let b = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&b).map_err(|e| Error::Invalid(format!("{what} is not valid: {e}")))
}

fn sha_of_name(name: &str) -> Option<String> {
    let stem = Path::new(name).file_name()?.to_str()?;
    let stem = stem.strip_suffix(".json").unwrap_or(stem);
    (stem.len() == 64 && stem.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", stem.to_ascii_lowercase()))
}

/// `docker save`'s legacy layout.
fn docker_legacy(staging: &Path) -> Result<Vec<Candidate>, Error> {
    let entries: Vec<DockerManifestEntry> =
        read_json(&staging.join("manifest.json"), "manifest.json")?;
    let mut out = Vec::new();
    for e in entries {
        let config_path = inside(staging, &e.config)?;
        let config_digest = file_digest(&config_path)?;
        if let Some(want) = sha_of_name(&e.config) {
            if want != config_digest {
                return Err(lie(&config_path, staging, &want, &config_digest));
            }
        }
        let config: ConfigFile = read_json(&config_path, &e.config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let p = inside(staging, l)?;
            // `blobs/sha256/<hex>` (docker ≥ 25) names its digest; `<id>/layer.tar` does not
            // (the diff_id check still covers it).
            let want = l
                .starts_with("blobs/sha256/")
                .then(|| sha_of_name(l))
                .flatten();
            layers.push((p, want));
        }
        let names = normalize_all(e.repo_tags.unwrap_or_default())?;
        out.push(Candidate {
            names,
            manifest_digest: None,
            manifest_path: None,
            config_path,
            config_digest,
            config,
            layers,
        });
    }
    Ok(out)
}

/// `RepoTags` by config digest from docker's `manifest.json`, when present next to `index.json`.
fn docker_tags(staging: &Path) -> Vec<(String, Vec<String>)> {
    let Ok(entries) =
        read_json::<Vec<DockerManifestEntry>>(&staging.join("manifest.json"), "manifest.json")
    else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| Some((sha_of_name(&e.config)?, e.repo_tags.unwrap_or_default())))
        .collect()
}

fn normalize_all(names: Vec<String>) -> Result<Vec<String>, Error> {
    names.iter().map(|n| reference::normalize(n)).collect()
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The OCI image layout (`index.json`, `blobs/sha256/`).
fn oci_layout(staging: &Path, tags: &[(String, Vec<String>)]) -> Result<Vec<Candidate>, Error> {
    let index: Value = read_json(&staging.join("index.json"), "index.json")?;
    let mut out = Vec::new();
    let manifests: Vec<Descriptor> =
        serde_json::from_value(index.get("manifests").cloned().unwrap_or(Value::Null))
            .map_err(|e| Error::Invalid(format!("index.json: invalid manifests: {e}")))?;
    for d in manifests {
        let mut names = Vec::new();
        for key in [
            "io.containerd.image.name",
            "org.opencontainers.image.ref.name",
        ] {
            if let Some(n) = d.annotations.get(key) {
                // A bare tag ("latest") is not a full reference; skip it.
                if n.contains('/') || n.contains(':') || key == "io.containerd.image.name" {
                    if let Ok(n) = reference::normalize(n) {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
        }
        let manifest = resolve_manifest(staging, d, 0)?;
        out.push(manifest_candidate(staging, manifest, names, tags)?);
    }
    Ok(out)
}

/// Follow an index to the manifest for this platform; returns (digest, path).
fn resolve_manifest(staging: &Path, d: Descriptor, depth: u32) -> Result<(String, PathBuf), Error> {
    if depth > 4 {
        return Err(Error::Invalid("image index nesting deeper than 4".into()));
    }
    let path = verified_blob(staging, &d.digest)?;
    if !INDEX_TYPES.contains(&d.media_type.as_str()) {
        return Ok((d.digest, path));
    }
    let idx: Value = read_json(&path, &d.digest)?;
    let list: Vec<Descriptor> =
        serde_json::from_value(idx.get("manifests").cloned().unwrap_or(Value::Null))
            .map_err(|e| Error::Invalid(format!("index {}: {e}", d.digest)))?;
    let mut archs = Vec::new();
    for m in list {
        match &m.platform {
            Some(p) if p.architecture == host_arch() && p.os == "linux" => {
                return resolve_manifest(staging, m, depth + 1)
            }
            Some(p) => archs.push(format!("{}/{}", p.os, p.architecture)),
            None => {}
        }
    }
    Err(Error::Invalid(format!(
        "no manifest for linux/{} in index {} (it has {})",
        host_arch(),
        d.digest,
        archs.join(", ")
    )))
}

/// The blob for `digest`, verified.
fn verified_blob(staging: &Path, digest: &str) -> Result<PathBuf, Error> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| Error::Invalid(format!("unsupported digest {digest:?}")))?;
    let p = inside(staging, &format!("blobs/sha256/{hex}"))?;
    let got = file_digest(&p)?;
    if got != digest {
        return Err(lie(&p, staging, digest, &got));
    }
    Ok(p)
}

fn manifest_candidate(
    staging: &Path,
    (digest, path): (String, PathBuf),
    mut names: Vec<String>,
    tags: &[(String, Vec<String>)],
) -> Result<Candidate, Error> {
    let m: Value = read_json(&path, &digest)?;
    let config_d: Descriptor =
        serde_json::from_value(m.get("config").cloned().unwrap_or(Value::Null))
            .map_err(|e| Error::Invalid(format!("manifest {digest}: config: {e}")))?;
    let layers_d: Vec<Descriptor> =
        serde_json::from_value(m.get("layers").cloned().unwrap_or(Value::Null))
            .map_err(|e| Error::Invalid(format!("manifest {digest}: layers: {e}")))?;
    let config_path = verified_blob(staging, &config_d.digest)?;
    let config: ConfigFile = read_json(&config_path, &config_d.digest)?;
    for (cfg, t) in tags {
        if cfg == &config_d.digest {
            for n in normalize_all(t.clone())? {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    let mut layers = Vec::new();
    for l in layers_d {
        if l.media_type.contains("zstd") {
            return Err(Error::Invalid(format!(
                "layer {}: zstd-compressed layers are not supported yet",
                l.digest
            )));
        }
        let hex = l
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::Invalid(format!("unsupported digest {:?}", l.digest)))?;
        layers.push((
            inside(staging, &format!("blobs/sha256/{hex}"))?,
            Some(l.digest),
        ));
    }
    Ok(Candidate {
        names,
        manifest_digest: Some(digest),
        manifest_path: Some(path),
        config_path,
        config_digest: config_d.digest,
        config,
        layers,
    })
}
