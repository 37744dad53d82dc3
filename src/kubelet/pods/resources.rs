//! Pod resources as the kubelet applies them: QoS class (upstream's `GetPodQOS`), the cgroup
//! path (`kubepods[/burstable|/besteffort]/pod<uid>`, the cgroupfs driver's names), and
//! requests/limits → cgroup v1 values (`MilliCPUToShares`, `MilliCPUToQuota` with the
//! 100 ms period, `memory.limit_in_bytes`, OOM score adjustment as `GetContainerOOMScoreAdjust`).

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::kubelet::runtime::spec::Resources;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

/// Parse a Kubernetes quantity into milli-units (cpu "250m" → 250, memory "64Mi" → bytes×1000).
pub fn milli(q: &Quantity) -> Option<i128> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (mult_num, mult_den): (i128, i128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "u" => (1, 1000),
        "n" => (1, 1_000_000),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "Ki" => (1024 * 1000, 1),
        "Mi" => (1024 * 1024 * 1000, 1),
        "Gi" => (1024 * 1024 * 1024 * 1000, 1),
        "Ti" => (1024i128.pow(4) * 1000, 1),
        s if s.starts_with(['e', 'E']) => {
            let exp: u32 = s[1..].parse().ok()?;
            (10i128.checked_pow(exp)? * 1000, 1)
        }
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: i128 = if int.is_empty() || int == "+" {
        0
    } else {
        int.parse().ok()?
    };
    let mut v = int.checked_mul(mult_num)? / mult_den;
    if !frac.is_empty() {
        let digits = frac.len().min(12) as u32;
        let f: i128 = frac[..digits as usize].parse().ok()?;
        v += f * mult_num / mult_den / 10i128.pow(digits);
    }
    Some(v)
}

fn get(c: &Container, limits: bool, name: &str) -> Option<i128> {
    let r = c.resources.as_ref()?;
    let m = if limits {
        r.limits.as_ref()?
    } else {
        r.requests.as_ref()?
    };
    milli(m.get(name)?)
}

/// Requests default to limits when only limits are set (as the apiserver defaults them).
fn request(c: &Container, name: &str) -> Option<i128> {
    get(c, false, name).or_else(|| get(c, true, name))
}

pub fn qos(pod: &Pod) -> Qos {
    let Some(spec) = &pod.spec else {
        return Qos::BestEffort;
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        for r in ["cpu", "memory"] {
            let req = request(c, r);
            let lim = get(c, true, r);
            if req.is_some_and(|v| v > 0) || lim.is_some_and(|v| v > 0) {
                any = true;
            }
            if lim.is_none() || req != lim {
                guaranteed = false;
            }
        }
    }
    if !any {
        Qos::BestEffort
    } else if guaranteed {
        Qos::Guaranteed
    } else {
        Qos::Burstable
    }
}

/// `<root>[/burstable|/besteffort]/pod<uid>`.
pub fn pod_cgroup(root: &str, qos: Qos, uid: &str) -> String {
    match qos {
        Qos::Guaranteed => format!("{root}/pod{uid}"),
        Qos::Burstable => format!("{root}/burstable/pod{uid}"),
        Qos::BestEffort => format!("{root}/besteffort/pod{uid}"),
    }
}

/// cgroup values for one container.
pub fn container_resources(c: &Container) -> Resources {
    let cpu_req = request(c, "cpu");
    let cpu_lim = get(c, true, "cpu");
    // MilliCPUToShares: 2 minimum, 1024 per CPU.
    let shares = cpu_req
        .map(|m| ((m * 1024) / 1000).max(2) as u64)
        .unwrap_or(2);
    let (quota, period) = match cpu_lim {
        // MilliCPUToQuota with the default 100 ms period; 1 ms minimum.
        Some(m) if m > 0 => (Some(((m * 100_000) / 1000).max(1000) as i64), Some(100_000)),
        _ => (None, None),
    };
    Resources {
        cpu_shares: Some(shares),
        cpu_quota: quota,
        cpu_period: period,
        memory_limit: get(c, true, "memory").map(|m| (m / 1000) as i64),
        pids_limit: None,
    }
}

/// Upstream's OOM score adjustment by QoS (burstable scaled by the memory request).
pub fn oom_score_adj(qos: Qos, c: &Container) -> i32 {
    match qos {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => {
            let capacity = mem_total().max(1);
            let req = request(c, "memory").map(|m| m / 1000).unwrap_or(0);
            let adj = 1000 - (1000 * req / capacity as i128);
            adj.clamp(3, 999) as i32
        }
    }
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(1 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let q = |s: &str| milli(&Quantity(s.into()));
        assert_eq!(q("250m"), Some(250));
        assert_eq!(q("1"), Some(1000));
        assert_eq!(q("1.5"), Some(1500));
        assert_eq!(q("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(q("1G"), Some(1_000_000_000_000));
        assert_eq!(q("1e3"), Some(1_000_000));
        assert_eq!(q("x"), None);
    }
}
