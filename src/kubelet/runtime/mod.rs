//! The container runtime inside the binary (the role containerd + runc play for k3s). It
//! knows nothing of Kubernetes: OCI-shaped specs in (`spec`), processes out.
//!
//! - `image`: the content-addressed image store and archive import;
//! - `shim`: the single-threaded per-pod process (`rampart __shim`) that owns the pod's
//!   namespaces and containers and outlives the agent; `client`: the agent's side of it;
//! - `container`: clone + namespaces + mounts + hardening + exec of one container;
//! - `seccomp`, `cgroup`, `logs`: the default profile, cgroup v1 files, CRI log lines;
//! - `netns`: sockets opened inside a pod's network namespace (probes, port-forward).
//!
//! Invariant: no container process is ever forked from the multi-threaded agent; only the
//! shim (started from a sealed copy of the binary, see `client`) clones them.
//! Design record: `docs/decisions/runtime.md`.

pub mod cgroup;
pub mod client;
pub mod container;
pub mod exec;
pub mod image;
pub mod logs;
pub mod netns;
pub mod seccomp;
pub mod shim;
pub mod spec;
