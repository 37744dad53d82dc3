//! `rampart snapshot restore FILE --data-dir NEWDIR --key-file KEY`: rebuild a server directory
//! from a snapshot, on this machine or a fresh one. The file is verified as it is unpacked into
//! a sibling staging directory; only a fully verified snapshot is renamed to NEWDIR, so a wrong
//! key, a truncated or a tampered file leaves nothing behind.

use std::io::{BufReader, Read};
use std::path::Path;

use super::archive::{self, Record};
use super::seal::{OpenReader, PlainReader};
use super::{sync_dir, Error, Header, SnapshotKey};

/// Counts bytes read from the sealed file, for progress on a terminal.
struct Counting<R> {
    inner: R,
    read: u64,
    total: u64,
    progress: Option<Box<dyn FnMut(u64, u64)>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if let Some(p) = self.progress.as_mut() {
            p(self.read, self.total);
        }
        Ok(n)
    }
}

/// Restore `file` into `new_dir` (absent or an empty directory) with the key in `key_file`.
/// `progress`, if given, is called with (bytes read, file size) as the file is verified.
pub fn restore(
    file: &Path,
    new_dir: &Path,
    key_file: &Path,
    progress: Option<Box<dyn FnMut(u64, u64)>>,
) -> Result<Header, Error> {
    let key = SnapshotKey::load(key_file)?;
    match std::fs::read_dir(new_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Restore(format!(
                    "{} is not empty: restore into a new directory",
                    new_dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let input = std::fs::File::open(file)
        .map_err(|e| Error::Restore(format!("cannot open snapshot {}: {e}", file.display())))?;
    let total = input.metadata()?.len();
    let counting = Counting {
        inner: BufReader::new(input),
        read: 0,
        total,
        progress,
    };
    let (header, opened) = OpenReader::new(counting, &key)?;
    let parent = match new_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let leaf = new_dir
        .file_name()
        .ok_or_else(|| Error::Restore(format!("{} is not a directory path", new_dir.display())))?;
    let staging = parent.join(format!(
        ".{}.restore-{}",
        leaf.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&staging)?;
    }
    let result = unpack(PlainReader::new(opened), &staging, total);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // The key that opened it stays with the restored server, so its next snapshots use it.
    let copied = std::fs::read(key_file)
        .map_err(Error::Io)
        .and_then(|k| archive_key(&staging, &k));
    if let Err(e) = copied {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if new_dir.exists() {
        std::fs::remove_dir(new_dir)?;
    }
    std::fs::rename(&staging, new_dir)?;
    sync_dir(&parent);
    Ok(header)
}

fn archive_key(dir: &Path, key: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("snapshot.key"))?;
    f.write_all(key)?;
    f.sync_all()?;
    Ok(())
}

fn unpack(mut plain: impl Read, staging: &Path, limit: u64) -> Result<(), Error> {
    let mut seen_store = false;
    while let Record::File {
        path,
        mode,
        contents,
    } = archive::read_record(&mut plain, limit)?
    {
        seen_store |= path.starts_with("store");
        if staging.join(&path).exists() {
            return Err(Error::Format(format!(
                "{} appears twice in the snapshot",
                path.display()
            )));
        }
        archive::materialize(staging, &path, mode, &contents)?;
    }
    // After the end record the sealed stream must end too (the last chunk is authenticated as
    // last, so this also proves nothing was cut off or appended).
    let mut rest = [0u8; 1];
    match plain.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => return Err(Error::Format("data after the end of the snapshot".into())),
        Err(e) => {
            return Err(match e.into_inner().map(|i| i.downcast::<Error>()) {
                Some(Ok(ours)) => *ours,
                _ => Error::Format("the snapshot is damaged".into()),
            })
        }
    }
    if !seen_store {
        return Err(Error::Format("the snapshot holds no datastore".into()));
    }
    sync_dir(staging);
    Ok(())
}
