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

// `unsafe` is denied crate-wide (Cargo.toml `[lints]`); these modules make system calls that
// have no safe wrapper (fork/exec into namespaces, capabilities, seccomp, memfd seals, flock,
// ioctls on the shim's loopback) and are the only ones allowed it. Every block says why it is
// sound (`// SAFETY:`, enforced by `clippy::undocumented_unsafe_blocks`).
pub mod cgroup;
#[allow(unsafe_code)]
pub mod client;
#[allow(unsafe_code)]
pub mod container;
#[allow(unsafe_code)]
pub mod exec;
#[allow(unsafe_code)]
pub mod image;
pub mod logs;
pub mod netns;
#[allow(unsafe_code)]
pub mod seccomp;
#[allow(unsafe_code)]
pub mod shim;
pub mod spec;
