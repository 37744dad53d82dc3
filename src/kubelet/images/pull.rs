//! One pull: resolve the reference on the endpoints `registries.yaml` gives (mirrors in
//! order, then the default endpoint; each with the pod's pull-secret credentials first, then
//! the endpoint's own, as upstream's kubelet hands containerd its keyring), pick the
//! linux/<this arch> manifest from an index, then fetch the config and the layers the store
//! does not have yet.
//!
//! Every blob is hashed as it streams into the store's staging directory and refused when
//! its digest or size differs from the descriptor's; a layer is then unpacked (its diff id
//! checked against the config) in staging, and only the commit — under the store's lock —
//! renames layers into place, writes the manifest and config blobs and then the index. So a
//! registry that lies leaves the store exactly as it was. Layers already in the store
//! (imported or pulled by another image) are neither downloaded nor unpacked again.

use std::path::PathBuf;
use std::time::Instant;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::distribution::Session;
use super::registries::Auth;
use super::transport::{self, display_url};
use super::{Keyring, PullError, Pulled, Puller};
use crate::kubelet::runtime::image::import::host_arch;
use crate::kubelet::runtime::image::{layer, remove_tree, write_synced, Image, ImageConfig, Store};

const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const MAX_MANIFEST: usize = 4 << 20;
const MAX_CONFIG: usize = 8 << 20;

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: ImageConfig,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// `docker.io/library/busybox:1` → (`docker.io`, `library/busybox`, `1`);
/// `reg:5000/a@sha256:…` → (`reg:5000`, `a`, `sha256:…`).
pub fn split(norm: &str) -> Result<(String, String, String), PullError> {
    let bad = || PullError::InvalidName(format!("invalid image reference {norm:?}"));
    let (name, reference) = match norm.split_once('@') {
        Some((n, d)) => (n, d.to_string()),
        None => {
            let slash = norm.rfind('/').ok_or_else(bad)?;
            let colon = norm[slash..].rfind(':').ok_or_else(bad)? + slash;
            (&norm[..colon], norm[colon + 1..].to_string())
        }
    };
    let (registry, repository) = name.split_once('/').ok_or_else(bad)?;
    if repository.is_empty() || reference.is_empty() {
        return Err(bad());
    }
    if let Some(hex) = reference.strip_prefix("sha256:") {
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PullError::InvalidName(format!(
                "invalid digest in image reference {norm:?}"
            )));
        }
    } else if reference.contains(':') {
        return Err(PullError::InvalidName(format!(
            "unsupported digest algorithm in {norm:?}"
        )));
    }
    Ok((registry.to_string(), repository.to_string(), reference))
}

/// Pull `norm` (a normalised reference) into the puller's store.
pub async fn pull(p: &Puller, norm: &str, keyring: &Keyring) -> Result<Pulled, PullError> {
    let (registry, repository, reference) = split(norm)?;
    let started = Instant::now();
    let mut best: Option<PullError> = None;
    for ep in p.registries.endpoints(&registry, &repository) {
        let tls = match p.tls(ep.tls.as_ref()) {
            Ok(t) => t,
            Err(e) => {
                best = Some(pick(best, e));
                continue;
            }
        };
        // Pull-secret credentials first, then the endpoint's own (or none).
        let mut creds: Vec<Option<Auth>> =
            keyring.lookup(&registry).into_iter().map(Some).collect();
        let own = ep.auth.clone();
        if !creds.contains(&own) {
            creds.push(own);
        }
        for auth in creds {
            let mut s = Session::new(tls.clone(), &ep.base, &ep.repository, auth);
            match resolve(&mut s, &reference).await {
                Ok((digest, body)) => {
                    let r = fetch_and_commit(p, &mut s, norm, &digest, body).await;
                    if let Ok(pulled) = &r {
                        tracing::info!(
                            image = norm,
                            endpoint = %ep.base,
                            id = %pulled.image.id,
                            bytes = pulled.size,
                            ms = started.elapsed().as_millis() as u64,
                            "image pulled"
                        );
                    }
                    return r;
                }
                Err(e @ PullError::Unauthorized(_)) => best = Some(pick(best, e)),
                Err(e) => {
                    best = Some(pick(best, e));
                    break; // another credential will not find it either: next endpoint
                }
            }
        }
    }
    let e = best.unwrap_or_else(|| PullError::NotFound(format!("{norm}: no endpoint")));
    Err(wrap(norm, e))
}

fn pick(best: Option<PullError>, e: PullError) -> PullError {
    match best {
        Some(b) if b.rank() >= e.rank() => b,
        _ => e,
    }
}

/// Upstream's (containerd's) wording around the cause.
fn wrap(norm: &str, e: PullError) -> PullError {
    let msg = |m: &str| {
        format!("failed to pull and unpack image \"{norm}\": failed to resolve reference \"{norm}\": {m}")
    };
    match e {
        PullError::NotFound(m) => PullError::NotFound(msg(&format!("{norm}: not found: {m}"))),
        PullError::Unauthorized(m) => PullError::Unauthorized(msg(&m)),
        PullError::Transport(m) => PullError::Transport(msg(&m)),
        e => e,
    }
}

/// The manifest for this platform: (digest, body), following an index.
async fn resolve(s: &mut Session, reference: &str) -> Result<(String, Vec<u8>), PullError> {
    let (digest, body) = fetch_manifest(s, reference).await?;
    let m: Manifest = serde_json::from_slice(&body)
        .map_err(|e| PullError::Invalid(format!("manifest {digest} is not valid: {e}")))?;
    let Some(list) = m.manifests else {
        return Ok((digest, body));
    };
    let mut archs = Vec::new();
    for d in list {
        match &d.platform {
            Some(pl) if pl.os == "linux" && pl.architecture == host_arch() => {
                let (dg, b) = fetch_manifest(s, &d.digest).await?;
                let inner: Manifest = serde_json::from_slice(&b)
                    .map_err(|e| PullError::Invalid(format!("manifest {dg} is not valid: {e}")))?;
                if inner.manifests.is_some() {
                    return Err(PullError::Invalid(format!(
                        "index {digest} points at another index"
                    )));
                }
                return Ok((dg, b));
            }
            Some(pl) => archs.push(format!("{}/{}", pl.os, pl.architecture)),
            None => {}
        }
    }
    Err(PullError::Invalid(format!(
        "no matching manifest for linux/{} in the manifest list entries (index {digest} has {})",
        host_arch(),
        if archs.is_empty() {
            "none".to_string()
        } else {
            archs.join(", ")
        }
    )))
}

async fn fetch_manifest(s: &mut Session, reference: &str) -> Result<(String, Vec<u8>), PullError> {
    let mut resp = s.get("manifests", reference, &MANIFEST_TYPES).await?;
    let url = s.url("manifests", reference);
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = transport::read_limited(resp.body_mut(), &url, MAX_MANIFEST)
        .await
        .map_err(|e| PullError::Transport(e.to_string()))?;
    let digest = format!("sha256:{:x}", Sha256::digest(&body));
    let want = if reference.starts_with("sha256:") {
        Some(reference.to_string())
    } else {
        header_digest.filter(|d| d.starts_with("sha256:"))
    };
    if let Some(w) = want.filter(|w| *w != digest) {
        return Err(PullError::Invalid(format!(
            "{}: the registry served a manifest with digest {digest}, expected {w}",
            display_url(&url)
        )));
    }
    Ok((digest, body))
}

/// A small blob (the config) in memory, verified.
async fn fetch_small(s: &mut Session, d: &Descriptor) -> Result<Vec<u8>, PullError> {
    check_digest_form(&d.digest)?;
    let mut resp = s.get("blobs", &d.digest, &[]).await?;
    let url = s.url("blobs", &d.digest);
    let body = transport::read_limited(resp.body_mut(), &url, MAX_CONFIG)
        .await
        .map_err(|e| PullError::Transport(e.to_string()))?;
    let got = format!("sha256:{:x}", Sha256::digest(&body));
    if got != d.digest {
        return Err(PullError::Invalid(format!(
            "{}: the registry served a blob with digest {got}, expected {}",
            display_url(&url),
            d.digest
        )));
    }
    Ok(body)
}

fn check_digest_form(d: &str) -> Result<(), PullError> {
    let ok = d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    });
    if ok {
        Ok(())
    } else {
        Err(PullError::Invalid(format!("unsupported digest {d:?}")))
    }
}

/// Stream a layer blob into `dst`, hashing it; refuses a wrong digest or an oversize body.
async fn fetch_layer(s: &mut Session, d: &Descriptor, dst: &PathBuf) -> Result<u64, PullError> {
    check_digest_form(&d.digest)?;
    let mut resp = s.get("blobs", &d.digest, &[]).await?;
    let url = s.url("blobs", &d.digest);
    let mut f = tokio::fs::File::create(dst)
        .await
        .map_err(|e| PullError::Store(format!("{}: {e}", dst.display())))?;
    let mut h = Sha256::new();
    let mut n: u64 = 0;
    while let Some(chunk) = transport::next_chunk(resp.body_mut(), &url)
        .await
        .map_err(|e| PullError::Transport(e.to_string()))?
    {
        n += chunk.len() as u64;
        if d.size.is_some_and(|size| n > size) {
            return Err(PullError::Invalid(format!(
                "{}: the registry served more than the {} bytes the manifest gives",
                display_url(&url),
                d.size.unwrap_or_default()
            )));
        }
        h.update(&chunk);
        f.write_all(&chunk)
            .await
            .map_err(|e| PullError::Store(format!("{}: {e}", dst.display())))?;
    }
    f.sync_all()
        .await
        .map_err(|e| PullError::Store(format!("{}: {e}", dst.display())))?;
    let got = format!("sha256:{:x}", h.finalize());
    if got != d.digest {
        return Err(PullError::Invalid(format!(
            "{}: the registry served a blob with digest {got}, expected {}",
            display_url(&url),
            d.digest
        )));
    }
    Ok(n)
}

/// What is staged for one pull (removed whatever happens).
struct Staging {
    dirs: Vec<PathBuf>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = remove_tree(d);
        }
    }
}

async fn fetch_and_commit(
    p: &Puller,
    s: &mut Session,
    norm: &str,
    manifest_digest: &str,
    manifest_body: Vec<u8>,
) -> Result<Pulled, PullError> {
    let m: Manifest = serde_json::from_slice(&manifest_body)
        .map_err(|e| PullError::Invalid(format!("manifest {manifest_digest} is not valid: {e}")))?;
    if m.media_type.contains("v1+prettyjws") || (m.config.is_none() && m.layers.is_none()) {
        return Err(PullError::Invalid(format!(
            "manifest {manifest_digest}: only OCI and docker schema 2 manifests are supported"
        )));
    }
    let config_d = m
        .config
        .ok_or_else(|| PullError::Invalid(format!("manifest {manifest_digest} has no config")))?;
    let layers = m.layers.unwrap_or_default();
    let config_body = fetch_small(s, &config_d).await?;
    let config: ConfigFile = serde_json::from_slice(&config_body)
        .map_err(|e| PullError::Invalid(format!("image config {}: {e}", config_d.digest)))?;
    if config.architecture != host_arch() || (!config.os.is_empty() && config.os != "linux") {
        return Err(PullError::Invalid(format!(
            "image {norm} is for {}/{}, this node is linux/{}",
            if config.os.is_empty() {
                "?"
            } else {
                &config.os
            },
            config.architecture,
            host_arch()
        )));
    }
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(PullError::Invalid(format!(
            "image {norm}: {} layers but the config lists {} diff_ids",
            layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let store = p.store.clone();
    let mut staging = Staging { dirs: Vec::new() };
    let mut staged: Vec<(PathBuf, String)> = Vec::new();
    let mut size = config_body.len() as u64;
    for (d, diff_id) in layers.iter().zip(&config.rootfs.diff_ids) {
        size += d.size.unwrap_or(0);
        check_digest_form(diff_id)?;
        if store.layer_dir(diff_id).is_dir() {
            continue; // shared with an image already here
        }
        if d.media_type.contains("zstd") {
            return Err(PullError::Invalid(format!(
                "layer {}: zstd-compressed layers are not supported yet",
                d.digest
            )));
        }
        let work = store.tmp_dir("pull")?;
        staging.dirs.push(work.clone());
        let blob = work.join("blob");
        fetch_layer(s, d, &blob).await?;
        let unpacked = work.join("layer");
        let want_blob = d.digest.clone();
        let want_diff = diff_id.clone();
        let u = {
            let (blob, unpacked) = (blob.clone(), unpacked.clone());
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir(&unpacked)
                    .map_err(|e| PullError::Store(format!("{}: {e}", unpacked.display())))?;
                layer::unpack(&blob, &unpacked).map_err(PullError::from)
            })
            .await
            .map_err(|e| PullError::Store(e.to_string()))??
        };
        if u.blob_digest != want_blob {
            return Err(PullError::Invalid(format!(
                "layer {want_blob}: content changed while unpacking ({})",
                u.blob_digest
            )));
        }
        if u.diff_id != want_diff {
            return Err(PullError::Invalid(format!(
                "layer {want_blob}: uncompressed digest {} does not match the config's diff_id {want_diff}",
                u.diff_id
            )));
        }
        let _ = std::fs::remove_file(&blob);
        staged.push((unpacked, want_diff));
    }
    let (registry, repository, reference) = split(norm)?;
    let mut names = Vec::new();
    if !reference.starts_with("sha256:") {
        names.push(norm.to_string());
    }
    names.push(format!("{registry}/{repository}@{manifest_digest}"));
    let image = Image {
        id: config_d.digest.clone(),
        names,
        manifest_digest: Some(manifest_digest.to_string()),
        layers: config.rootfs.diff_ids.clone(),
        config: config.config,
        architecture: config.architecture,
        size: 0,
    };
    let manifest_digest = manifest_digest.to_string();
    let image = tokio::task::spawn_blocking(move || {
        commit(
            &store,
            staged,
            image,
            &config_body,
            &manifest_digest,
            &manifest_body,
        )
    })
    .await
    .map_err(|e| PullError::Store(e.to_string()))??;
    drop(staging);
    Ok(Pulled { image, size })
}

/// Under the store lock: layers into place (a layer another pull put there meanwhile wins),
/// blobs, then the index.
fn commit(
    store: &Store,
    staged: Vec<(PathBuf, String)>,
    mut image: Image,
    config_body: &[u8],
    manifest_digest: &str,
    manifest_body: &[u8],
) -> Result<Image, PullError> {
    let _lock = store.lock()?;
    for (dir, diff_id) in staged {
        let dst = store.layer_dir(&diff_id);
        if !dst.is_dir() {
            std::fs::rename(&dir, &dst)
                .map_err(|e| PullError::Store(format!("{}: {e}", dst.display())))?;
        }
    }
    // A layer that was present when the pull skipped it may have gone since (image GC of
    // the only other image that had it): refuse rather than record an image without it;
    // the retry after the back-off downloads it.
    if let Some(l) = image.layers.iter().find(|l| !store.layer_dir(l).is_dir()) {
        return Err(PullError::Store(format!(
            "layer {l} was removed while the image was being pulled; pulling again"
        )));
    }
    for (digest, body) in [
        (&image.id, config_body),
        (&manifest_digest.to_string(), manifest_body),
    ] {
        let dst = store.blob_path(digest);
        if !dst.exists() {
            let tmp = dst.with_extension("tmp");
            write_synced(&tmp, body)?;
            std::fs::rename(&tmp, &dst)
                .map_err(|e| PullError::Store(format!("{}: {e}", dst.display())))?;
        }
    }
    image.size = image
        .layers
        .iter()
        .map(|l| Store::dir_size(&store.layer_dir(l)))
        .sum();
    store.commit(vec![image.clone()])?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_references() {
        let (r, p, t) = split("docker.io/library/busybox:1.36").unwrap();
        assert_eq!(
            (r.as_str(), p.as_str(), t.as_str()),
            ("docker.io", "library/busybox", "1.36")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let (r, p, t) = split(&format!("127.0.0.1:5000/x/y@{d}")).unwrap();
        assert_eq!((r.as_str(), p.as_str()), ("127.0.0.1:5000", "x/y"));
        assert_eq!(t, d);
        assert!(split("127.0.0.1:5000/x@sha256:abc").is_err());
        assert!(split("127.0.0.1:5000/x@md5:abc").is_err());
    }
}
