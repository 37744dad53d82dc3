//! Rampart: a Kubernetes distribution in one static binary. See `docs/ARCHITECTURE.md` for the
//! map of modules and the rules between them.
//!
//! Outside tests nothing unwraps or expects (a panic on input is a bug; an invariant the code
//! relies on is expressed in its types or returned as an error) and no thread sleeps to wait
//! (`clippy.toml`). `[lints]` in Cargo.toml holds the rules for every target.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

pub mod api;
pub mod apiserver;
pub mod auth;
pub mod cli;
pub mod client;
pub mod controllers;
pub mod dns;
pub mod kubelet;
pub mod netfilter;
pub mod netpol;
pub mod pki;
pub mod proxy;
pub mod roles;
pub mod scheduler;
pub mod store;
pub mod test_hooks;
pub mod tls;
