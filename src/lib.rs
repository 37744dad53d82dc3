//! Rampart: a Kubernetes distribution in one static binary. See `docs/ARCHITECTURE.md` for the
//! map of modules and the rules between them.

pub mod api;
pub mod apiserver;
pub mod auth;
pub mod cli;
pub mod client;
pub mod controllers;
pub mod dns;
pub mod kubelet;
pub mod pki;
pub mod roles;
pub mod scheduler;
pub mod store;
