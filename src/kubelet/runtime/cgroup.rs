//! cgroup v1 (this machine and CI run the hybrid layout): one directory per container under
//! each controller we use, limits written before the process joins, removed after it is
//! reaped. The path is the caller's (`kubepods/<qos>/pod<uid>/<ctr>`, upstream's cgroupfs
//! driver names). Kubernetes-free: it only writes files.

use std::path::{Path, PathBuf};

use super::spec::Resources;

/// The v1 controllers we create directories in.
pub const CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {source}")]
pub struct Error {
    path: PathBuf,
    source: std::io::Error,
}

fn root() -> PathBuf {
    PathBuf::from(
        std::env::var_os("RAMPART_CGROUP_ROOT").unwrap_or_else(|| "/sys/fs/cgroup".into()),
    )
}

/// The directories of one cgroup path across the controllers that are mounted.
pub fn dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    CONTROLLERS
        .iter()
        .map(|c| root().join(c))
        .filter(|c| c.join("cgroup.procs").exists())
        .map(|c| c.join(rel))
        .collect()
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|source| Error {
        path: path.to_path_buf(),
        source,
    })
}

/// Create the cgroup (and parents) and write the limits.
pub fn create(path: &str, r: &Resources) -> Result<Vec<PathBuf>, Error> {
    let dirs = dirs(path);
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|source| Error {
            path: d.clone(),
            source,
        })?;
        let ctrl = d
            .strip_prefix(root())
            .ok()
            .and_then(|p| p.components().next())
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .to_string();
        match ctrl.as_str() {
            "cpu" => {
                if let Some(s) = r.cpu_shares {
                    write(&d.join("cpu.shares"), &s.max(2).to_string())?;
                }
                if let Some(p) = r.cpu_period {
                    write(&d.join("cpu.cfs_period_us"), &p.to_string())?;
                }
                if let Some(q) = r.cpu_quota {
                    write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
            }
            "memory" => {
                if let Some(m) = r.memory_limit {
                    write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
                }
            }
            "pids" => {
                if let Some(p) = r.pids_limit {
                    write(&d.join("pids.max"), &p.to_string())?;
                }
            }
            _ => {}
        }
    }
    Ok(dirs)
}

/// Move `pid` into every directory of the cgroup.
pub fn join(dirs: &[PathBuf], pid: i32) -> Result<(), Error> {
    for d in dirs {
        write(&d.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

/// Whether the memory controller OOM-killed something in this cgroup.
pub fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("memory.oom_control")).ok())
        .any(|s| {
            s.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
}

/// Remove the container's directories, then their parent (the pod's) if that became empty.
pub fn remove(path: &str) {
    let rel: Vec<&str> = path.trim_matches('/').split('/').collect();
    for base in CONTROLLERS.iter().map(|c| root().join(c)) {
        for n in (rel.len().saturating_sub(1).max(1)..=rel.len()).rev() {
            let d = base.join(rel[..n].join("/"));
            // rmdir fails while processes remain or children exist: exactly what we want.
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
        }
    }
}
