//! Node resource accounting and hard eviction, as upstream's kubelet (`cm/node_container_manager`
//! for allocatable, `eviction/` for signals, thresholds and ranking):
//! - `Reserved` is `--system-reserved`/`--kube-reserved` (`cpu=100m,memory=256Mi,...`);
//! - `Thresholds` is `--eviction-hard` (`memory.available<100Mi,nodefs.available<10%,...`),
//!   upstream's defaults when unset: `memory.available<100Mi`, `nodefs.available<10%`,
//!   `imagefs.available<15%`, `nodefs.inodesFree<5%`;
//! - allocatable = capacity − system-reserved − kube-reserved − the hard threshold of the
//!   matching signal (memory, ephemeral-storage);
//! - `Signals` are read from this machine (`/proc/meminfo` MemAvailable, `statvfs` of the
//!   data directory, which also holds the image store, `pid_max` and the process count);
//!   a crossed threshold is a node condition (MemoryPressure, DiskPressure, PIDPressure),
//!   its `NoSchedule` taint, and the eviction of one pod per round (`rank`): pods using more
//!   than they requested first, BestEffort before Burstable before Guaranteed, then priority,
//!   then usage above requests.
//!
//! Pure apart from `Signals::read`: parsing and decisions are unit-tested here.

use std::path::Path;

use crate::api::quantity::Milli;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {flag} {value:?}: {detail}")]
    Flag {
        flag: &'static str,
        value: String,
        detail: String,
    },
}

/// Reserved resources, in bytes / millicores / pids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_milli: u64,
    pub memory: u64,
    pub ephemeral: u64,
    pub pids: u64,
}

impl Reserved {
    pub fn parse(flag: &'static str, s: &str) -> Result<Reserved, Error> {
        let err = |detail: String| Error::Flag {
            flag,
            value: s.to_string(),
            detail,
        };
        let mut r = Reserved::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not name=quantity")))?;
            let q = Milli::parse(v.trim())
                .filter(|q| q.0 >= 0)
                .ok_or_else(|| err(format!("{v:?} is not a quantity")))?;
            let units = u64::try_from((q.0 + 999) / 1000).unwrap_or(u64::MAX);
            match k.trim() {
                "cpu" => r.cpu_milli = u64::try_from(q.0).unwrap_or(u64::MAX),
                "memory" => r.memory = units,
                "ephemeral-storage" => r.ephemeral = units,
                "pid" => r.pids = units,
                other => return Err(err(format!("unknown resource {other:?}"))),
            }
        }
        Ok(r)
    }

    pub fn plus(self, o: Reserved) -> Reserved {
        Reserved {
            cpu_milli: self.cpu_milli.saturating_add(o.cpu_milli),
            memory: self.memory.saturating_add(o.memory),
            ephemeral: self.ephemeral.saturating_add(o.ephemeral),
            pids: self.pids.saturating_add(o.pids),
        }
    }
}

/// A threshold: an absolute amount or a percentage of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Bytes(u64),
    Percent(f64),
}

impl Amount {
    /// The amount for a given capacity.
    pub fn of(self, capacity: u64) -> u64 {
        match self {
            Amount::Bytes(b) => b,
            Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }
}

/// The eviction signals upstream defines on Linux that this kubelet measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    ImagefsAvailable,
    NodefsInodesFree,
    PidAvailable,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The resource named in `Evicted` messages and the condition it drives.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
            Signal::NodefsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::PidAvailable => "PIDPressure",
            _ => "DiskPressure",
        }
    }

    const ALL: [Signal; 5] = [
        Signal::MemoryAvailable,
        Signal::NodefsAvailable,
        Signal::ImagefsAvailable,
        Signal::NodefsInodesFree,
        Signal::PidAvailable,
    ];
}

/// `--eviction-hard`.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds(pub Vec<(Signal, Amount)>);

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds(vec![
            (Signal::MemoryAvailable, Amount::Bytes(100 << 20)),
            (Signal::NodefsAvailable, Amount::Percent(10.0)),
            (Signal::ImagefsAvailable, Amount::Percent(15.0)),
            (Signal::NodefsInodesFree, Amount::Percent(5.0)),
        ])
    }
}

impl Thresholds {
    /// Parses upstream's syntax; an empty string means upstream's defaults.
    pub fn parse(s: &str) -> Result<Thresholds, Error> {
        if s.trim().is_empty() {
            return Ok(Thresholds::default());
        }
        let err = |detail: String| Error::Flag {
            flag: "--eviction-hard",
            value: s.to_string(),
            detail,
        };
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('<')
                .ok_or_else(|| err(format!("{part:?} is not signal<quantity")))?;
            let sig = Signal::ALL
                .into_iter()
                .find(|x| x.name() == k.trim())
                .ok_or_else(|| err(format!("unknown signal {k:?}")))?;
            let v = v.trim();
            let amount = if let Some(p) = v.strip_suffix('%') {
                let p: f64 = p
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=100.0).contains(p))
                    .ok_or_else(|| err(format!("{v:?} is not a percentage")))?;
                Amount::Percent(p)
            } else {
                let q = Milli::parse(v)
                    .filter(|q| q.0 >= 0)
                    .ok_or_else(|| err(format!("{v:?} is not a quantity")))?;
                Amount::Bytes(u64::try_from((q.0 + 999) / 1000).unwrap_or(u64::MAX))
            };
            out.push((sig, amount));
        }
        Ok(Thresholds(out))
    }

    pub fn get(&self, s: Signal) -> Option<Amount> {
        self.0.iter().find(|(x, _)| *x == s).map(|(_, a)| *a)
    }
}

/// What the machine has and has left.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    pub memory_capacity: u64,
    pub memory_available: u64,
    pub fs_capacity: u64,
    pub fs_available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub pid_max: u64,
    pub pids_used: u64,
}

impl Signals {
    pub fn read(data_dir: &Path) -> Signals {
        let mut s = Signals::default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        };
        s.memory_capacity = field("MemTotal:").unwrap_or(0);
        s.memory_available = field("MemAvailable:").unwrap_or(s.memory_capacity);
        if let Ok(st) = nix::sys::statvfs::statvfs(data_dir) {
            // The field types differ between targets (u32 on some 32-bit ones).
            #[allow(clippy::unnecessary_cast)]
            {
                let frsize = st.fragment_size() as u64;
                s.fs_capacity = (st.blocks() as u64).saturating_mul(frsize);
                s.fs_available = (st.blocks_available() as u64).saturating_mul(frsize);
                s.inodes = st.files() as u64;
                s.inodes_free = st.files_available() as u64;
            }
        }
        s.pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(32768);
        s.pids_used = std::fs::read_dir("/proc")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                    .count() as u64
            })
            .unwrap_or(0);
        s
    }

    /// (available, capacity) of a signal.
    pub fn measure(&self, sig: Signal) -> (u64, u64) {
        match sig {
            Signal::MemoryAvailable => (self.memory_available, self.memory_capacity),
            Signal::NodefsAvailable | Signal::ImagefsAvailable => {
                (self.fs_available, self.fs_capacity)
            }
            Signal::NodefsInodesFree => (self.inodes_free, self.inodes),
            Signal::PidAvailable => (self.pid_max.saturating_sub(self.pids_used), self.pid_max),
        }
    }

    /// The signals whose hard threshold is crossed (a capacity of 0 means unmeasured).
    pub fn crossed(&self, t: &Thresholds) -> Vec<Signal> {
        t.0.iter()
            .filter(|(sig, amount)| {
                let (avail, cap) = self.measure(*sig);
                cap > 0 && avail < amount.of(cap)
            })
            .map(|(sig, _)| *sig)
            .collect()
    }
}

/// A pod as the eviction ranking sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: String,
    /// 0 BestEffort, 1 Burstable, 2 Guaranteed.
    pub qos: u8,
    pub priority: i32,
    pub usage: u64,
    pub request: u64,
}

/// Upstream's `rankMemoryPressure`: exceeding requests first, then lower priority, then
/// more usage above requests. BestEffort pods request nothing, so they always exceed.
pub fn rank(mut pods: Vec<Candidate>) -> Vec<Candidate> {
    pods.sort_by(|a, b| {
        let exceeds = |c: &Candidate| c.usage > c.request || c.qos == 0;
        exceeds(b)
            .cmp(&exceeds(a))
            .then(a.qos.cmp(&b.qos))
            .then(a.priority.cmp(&b.priority))
            .then((b.usage.saturating_sub(b.request)).cmp(&a.usage.saturating_sub(a.request)))
    });
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_upstream_and_refuse_nonsense() {
        let r = Reserved::parse("--system-reserved", "cpu=100m,memory=256Mi").unwrap();
        assert_eq!(r.cpu_milli, 100);
        assert_eq!(r.memory, 256 << 20);
        assert!(Reserved::parse("--kube-reserved", "gpu=1").is_err());
        assert!(Reserved::parse("--kube-reserved", "memory=-1").is_err());
        assert!(Reserved::parse("--kube-reserved", "memory").is_err());
        assert_eq!(Thresholds::parse("").unwrap(), Thresholds::default());
        let t = Thresholds::parse("memory.available<1Gi, nodefs.available<50%").unwrap();
        assert_eq!(t.get(Signal::MemoryAvailable), Some(Amount::Bytes(1 << 30)));
        assert_eq!(t.get(Signal::NodefsAvailable), Some(Amount::Percent(50.0)));
        assert_eq!(t.get(Signal::ImagefsAvailable), None);
        for bad in [
            "memory.available>1Gi",
            "cpu.available<1",
            "nodefs.available<150%",
            "memory.available<x",
        ] {
            assert!(Thresholds::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crossing_and_ranking() {
        let s = Signals {
            memory_capacity: 8 << 30,
            memory_available: 50 << 20,
            fs_capacity: 100,
            fs_available: 20,
            inodes: 100,
            inodes_free: 50,
            pid_max: 1000,
            pids_used: 10,
        };
        assert_eq!(
            s.crossed(&Thresholds::default()),
            vec![Signal::MemoryAvailable]
        );
        let t = Thresholds::parse("nodefs.available<30%,pid.available<995").unwrap();
        assert_eq!(
            s.crossed(&t),
            vec![Signal::NodefsAvailable, Signal::PidAvailable]
        );
        let c = |key: &str, qos, usage, request| Candidate {
            key: key.into(),
            qos,
            priority: 0,
            usage,
            request,
        };
        let order: Vec<String> = rank(vec![
            c("guaranteed", 2, 10, 10),
            c("burstable-over", 1, 50, 10),
            c("besteffort", 0, 1, 0),
            c("burstable-under", 1, 5, 10),
        ])
        .into_iter()
        .map(|c| c.key)
        .collect();
        assert_eq!(
            order,
            [
                "besteffort",
                "burstable-over",
                "burstable-under",
                "guaranteed"
            ]
        );
    }
}
