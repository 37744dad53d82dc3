//! What the runtime is asked to run: a subset of the OCI runtime spec (`config.json`), with
//! the OCI field names, plus the root filesystem as overlayfs layers and the log path.
//! Plain data, no Kubernetes: the kubelet translates pods into this.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// containerd's default capability set (`oci.defaultUnixCaps`), which Kubernetes pods get.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// runc's masked paths (`/dev/null` over files, an empty read-only tmpfs over directories).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub process: Process,
    pub root: Root,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub linux: Linux,
    /// Free-form labels the caller gets back with the container's state (the kubelet keeps
    /// its restart bookkeeping here, as upstream keeps it in container labels).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// CRI-format log file for stdout/stderr (created with its parent directories).
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    /// Rotate the log past this size (default `logs::MAX_BYTES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_bytes: Option<u64>,
    /// Log files kept, the current one included (default `logs::MAX_FILES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_files: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "root_dir")]
    pub cwd: String,
    #[serde(default)]
    pub user: User,
    /// Capability names (`CAP_...`) for bounding, effective, permitted (and inheritable) sets.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// Give the process a pseudo-terminal as stdin/stdout/stderr (OCI `terminal`; the pod's
    /// `tty`): its output is one stream, logged as stdout.
    #[serde(default)]
    pub terminal: bool,
    /// Keep the process's stdin open for attaching (CRI `stdin`); else it reads `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin once the first attach that took it ends (CRI `stdin_once`).
    #[serde(default)]
    pub stdin_once: bool,
}

fn root_dir() -> String {
    "/".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// The root filesystem: overlayfs over read-only `layers` (bottom first) with a writable
/// upper directory the runtime creates in the container's state directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Root {
    pub layers: Vec<PathBuf>,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub destination: String,
    /// `bind` (source is a host path) or `tmpfs`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub source: Option<PathBuf>,
    #[serde(default)]
    pub readonly: bool,
    /// For `bind`: mount this path beneath `source` instead of `source` itself, opened
    /// with no symlink followed and no escape from `source` (a pod's `subPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    /// `None` → no seccomp filter (Unconfined); `Some("runtime/default")` → our default.
    #[serde(default)]
    pub seccomp: Option<String>,
    #[serde(default = "yes")]
    pub masked_paths: bool,
    /// cgroup path below each v1 controller's mount (`kubepods/besteffort/pod<uid>/<ctr>`).
    #[serde(default)]
    pub cgroups_path: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    /// Share the host's PID namespace instead of a new one.
    #[serde(default)]
    pub host_pid: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    #[serde(default)]
    pub cpu_quota: Option<i64>,
    #[serde(default)]
    pub cpu_period: Option<u64>,
    #[serde(default)]
    pub memory_limit: Option<i64>,
    #[serde(default)]
    pub pids_limit: Option<i64>,
}
