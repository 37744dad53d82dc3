//! Reading one cgroup v1 group's counters, as cadvisor does for the summary API:
//! `cpuacct.usage` (cumulative CPU nanoseconds), `memory.usage_in_bytes`, and from
//! `memory.stat` the hierarchical `total_inactive_file`, `total_rss`, `total_pgfault`,
//! `total_pgmajfault`. The working set is cadvisor's: usage minus inactive file pages
//! (never below zero). Kubernetes-free: a path in, numbers out.

use std::path::{Path, PathBuf};

/// Where the v1 controllers are mounted (`RAMPART_CGROUP_ROOT` overrides, as the runtime's).
pub fn root() -> PathBuf {
    PathBuf::from(
        std::env::var_os("RAMPART_CGROUP_ROOT").unwrap_or_else(|| "/sys/fs/cgroup".into()),
    )
}

/// One reading of a group's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time, nanoseconds (`cpuacct.usage`); `None` without the controller.
    pub cpu_ns: Option<u64>,
    pub memory: Option<Memory>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

/// Read the group `rel` (relative to each controller's mount; "" is the root group).
pub fn read(rel: &str) -> Usage {
    read_at(&root(), rel)
}

pub fn read_at(root: &Path, rel: &str) -> Usage {
    let rel = rel.trim_matches('/');
    let dir = |ctrl: &str| {
        if rel.is_empty() {
            root.join(ctrl)
        } else {
            root.join(ctrl).join(rel)
        }
    };
    let number =
        |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let cpu_ns = number(dir("cpuacct").join("cpuacct.usage"));
    let memory = number(dir("memory").join("memory.usage_in_bytes")).map(|usage| {
        let stat = std::fs::read_to_string(dir("memory").join("memory.stat")).unwrap_or_default();
        memory(usage, &stat)
    });
    Usage { cpu_ns, memory }
}

/// cadvisor's figures from `memory.usage_in_bytes` and `memory.stat`.
pub fn memory(usage: u64, stat: &str) -> Memory {
    let field = |name: &str| {
        stat.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Memory {
        usage,
        working_set: usage.saturating_sub(field("total_inactive_file")),
        rss: field("total_rss"),
        page_faults: field("total_pgfault"),
        major_page_faults: field("total_pgmajfault"),
    }
}

/// The child groups of `rel` under the `cpuacct` controller (the pods' and containers'
/// groups are created in every controller, so one listing is enough).
pub fn children(rel: &str) -> Vec<String> {
    let dir = root().join("cpuacct").join(rel.trim_matches('/'));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn working_set_is_usage_minus_inactive_file() {
        let stat = "cache 100\nrss 5\ntotal_rss 4096\ntotal_inactive_file 1000\ntotal_pgfault 7\ntotal_pgmajfault 1\n";
        let m = super::memory(10_000, stat);
        assert_eq!(m.working_set, 9_000);
        assert_eq!(m.rss, 4096);
        assert_eq!((m.page_faults, m.major_page_faults), (7, 1));
        // Inactive file above usage (racy reads) floors at zero, as cadvisor.
        assert_eq!(super::memory(10, stat).working_set, 0);
    }

    #[test]
    fn reads_a_fake_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("cpuacct/kubepods/podx");
        std::fs::create_dir_all(&g).unwrap();
        std::fs::write(g.join("cpuacct.usage"), "123456789\n").unwrap();
        let m = d.path().join("memory/kubepods/podx");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("memory.usage_in_bytes"), "2048\n").unwrap();
        std::fs::write(
            m.join("memory.stat"),
            "total_inactive_file 48\ntotal_rss 1000\n",
        )
        .unwrap();
        let u = super::read_at(d.path(), "kubepods/podx");
        assert_eq!(u.cpu_ns, Some(123_456_789));
        let mem = u.memory.unwrap();
        assert_eq!((mem.usage, mem.working_set, mem.rss), (2048, 2000, 1000));
        assert_eq!(
            super::read_at(d.path(), "kubepods/missing"),
            super::Usage::default()
        );
    }
}
