//! Damaged, foreign, locked and full data directories: each is a clear error, never a panic,
//! and never a silently re-initialised store.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use rampart::store::{Backend, Error, RocksBackend, RocksConfig};

fn open(dir: &Path) -> Result<RocksBackend, Error> {
    RocksBackend::open(RocksConfig::new(dir))
}

async fn seeded(dir: &Path) {
    let s = open(dir).unwrap();
    for i in 0..50 {
        s.create(&format!("/k/{i}"), Bytes::from(vec![b'x'; 2000]))
            .await
            .unwrap();
    }
}

#[test]
fn a_file_where_the_directory_should_be() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = open(&file).err().expect("must fail");
    assert!(matches!(err, Error::BadDataDir { .. }), "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn a_missing_directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/store");
    drop(open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn foreign_files_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), b"someone's data").unwrap();
    let err = open(dir.path()).err().expect("must fail");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("precious.txt")).unwrap(),
        b"someone's data"
    );
}

#[tokio::test]
async fn garbage_current_file() {
    let dir = tempfile::tempdir().unwrap();
    seeded(dir.path()).await;
    std::fs::write(dir.path().join("CURRENT"), b"\x00\xffgarbage\n").unwrap();
    let err = open(dir.path()).err().expect("must fail");
    assert!(!err.to_string().is_empty());
}

#[tokio::test]
async fn missing_current_file() {
    let dir = tempfile::tempdir().unwrap();
    seeded(dir.path()).await;
    std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
    let err = open(dir.path()).err().expect("must fail");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn corrupted_table_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).unwrap();
        for i in 0..50 {
            s.create(&format!("/k/{i}"), Bytes::from(vec![b'x'; 2000]))
                .await
                .unwrap();
        }
    }
    // Reopen forces the WAL into an SST; then flip bytes in every table and manifest file.
    drop(open(dir.path()).unwrap());
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".sst") || name.starts_with("MANIFEST") {
            let mut bytes = std::fs::read(entry.path()).unwrap();
            let len = bytes.len();
            for b in bytes.iter_mut().skip(len / 4).take(len / 2) {
                *b ^= 0x5a;
            }
            std::fs::write(entry.path(), bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    // Either open refuses, or reads report corruption: never a panic, never wrong data.
    match open(dir.path()) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(s) => {
            for i in 0..50 {
                // Missing or an error is acceptable; a wrong value is not.
                if let Ok(Some(kv)) = s.get(&format!("/k/{i}"), None).await {
                    assert_eq!(kv.value.len(), 2000);
                }
            }
        }
    }
}

#[test]
fn locked_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let mut server = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["server", "--log-format", "json", "--data-dir"])
        .arg(&data)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first server to hold the store.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !data.join("store/LOCK").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "server never opened its store"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = open(&data.join("store")).err().expect("must fail");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    // The CLI says so in one line and exits non-zero.
    let second = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["server", "--log-format", "json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rampart: ") && last.contains("locked"),
        "{stderr}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_an_error_not_a_panic() {
    if !is_root() {
        eprintln!("SKIP full_disk_is_an_error_not_a_panic: needs root to mount a small tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs failed");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt);
    let store_dir = mnt.join("store");
    let s = match open(&store_dir) {
        Ok(s) => s,
        Err(e) => panic!("a 6 MiB tmpfs should hold an empty store: {e}"),
    };
    let big = Bytes::from(vec![b'z'; 256 * 1024]);
    let mut written = Vec::new();
    let mut failure = None;
    for i in 0..200 {
        let key = format!("/fill/{i}");
        match s.create(&key, big.clone()).await {
            Ok(rev) => written.push((key, rev)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let err = failure.expect("a 6 MiB disk cannot hold 50 MiB");
    assert!(
        matches!(err, Error::NoSpace | Error::Storage(_)),
        "unexpected error kind: {err}"
    );
    assert!(err.to_string().contains("space"), "{err}");
    // Reads of acknowledged data still work.
    for (key, rev) in &written {
        let kv = s.get(key, None).await.unwrap().unwrap();
        assert_eq!(kv.mod_revision, *rev);
    }
    drop(s);
    // With room again, the store opens with every acknowledged write.
    let status = Command::new("mount")
        .args(["-o", "remount,size=128m"])
        .arg(mnt)
        .status()
        .unwrap();
    assert!(status.success());
    let s = open(&store_dir).unwrap();
    for (key, rev) in &written {
        assert_eq!(s.get(key, None).await.unwrap().unwrap().mod_revision, *rev);
    }
    s.create("/after", Bytes::from_static(b"ok")).await.unwrap();
}
