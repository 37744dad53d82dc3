//! Upstream's `AtomicWriter` for configMap and secret volumes: the payload lives in a
//! timestamped directory `..<time>`, `..data` is a symlink to it, and every user-visible top
//! level entry is a symlink `<name> -> ..data/<name>`. An update writes a new timestamped
//! directory, then swaps `..data` with one `rename(2)` of a fresh symlink, so a reader in the
//! container sees the old payload or the new one, never a mix; the old directory and entries
//! that left the payload are removed afterwards. An unchanged payload writes nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Relative path → (content, mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

fn valid(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.starts_with("..")
        && rel.split('/').all(|p| !p.is_empty() && p != "..")
}

/// Whether `dir/..data` already holds exactly `payload`.
fn unchanged(dir: &Path, payload: &Payload) -> bool {
    let data = dir.join("..data");
    if std::fs::symlink_metadata(&data).is_err() {
        return false;
    }
    let mut count = 0usize;
    fn walk(base: &Path, rel: &str, n: &mut usize) {
        let Ok(rd) = std::fs::read_dir(base.join(rel)) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &r, n);
            } else {
                *n += 1;
            }
        }
    }
    walk(&data, "", &mut count);
    count == payload.len()
        && payload.iter().all(|(rel, (bytes, mode))| {
            let p = data.join(rel);
            std::fs::read(&p).is_ok_and(|b| &b == bytes)
                && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o777 == *mode)
        })
}

/// Writes `payload` into `dir` as described above; returns whether anything changed.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, String> {
    if let Some(bad) = payload.keys().find(|k| !valid(k)) {
        return Err(format!("invalid volume file path {bad:?}"));
    }
    if unchanged(dir, payload) {
        return Ok(false);
    }
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let stamp = format!("..{}", jiff::Timestamp::now().as_nanosecond());
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir(&ts_dir).map_err(|e| err(&ts_dir, e))?;
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| err(&ts_dir, e))?;
    for (rel, (bytes, mode)) in payload {
        let p = ts_dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
        }
        std::fs::write(&p, bytes).map_err(|e| err(&p, e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| err(&p, e))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(|e| err(&tmp, e))?;
    // User-visible entries: one symlink per top-level name.
    let tops: std::collections::BTreeSet<&str> =
        payload.keys().filter_map(|k| k.split('/').next()).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::read_link(&link).is_ok_and(|t| t == Path::new("..data").join(top)) {
            continue;
        }
        let tmp = dir.join(format!("..{top}_tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("..data").join(top), &tmp)
            .map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| err(&link, e))?;
    }
    // Entries that left the payload, and the previous payload.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.starts_with("..") && !tops.contains(name.as_str()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old.filter(|o| o != Path::new(&stamp)) {
        let o = dir.join(old);
        if o.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        {
            let _ = std::fs::remove_dir_all(o);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str)]) -> Payload {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn swaps_atomically_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        assert!(write(d.path(), &payload(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(d.path().join("sub/b")).unwrap(),
            "2"
        );
        assert!(std::fs::symlink_metadata(d.path().join("a"))
            .unwrap()
            .is_symlink());
        assert!(!write(d.path(), &payload(&[("a", "1"), ("sub/b", "2")])).unwrap());
        assert!(write(d.path(), &payload(&[("a", "changed")])).unwrap());
        assert_eq!(
            std::fs::read_to_string(d.path().join("a")).unwrap(),
            "changed"
        );
        assert!(!d.path().join("sub").exists(), "a removed key stayed");
        let stamps = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1, "old payload directories left behind");
        assert!(write(d.path(), &payload(&[("../x", "1")])).is_err());
        assert!(write(d.path(), &payload(&[("..data", "1")])).is_err());
    }
}
