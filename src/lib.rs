//! Rampart: a Kubernetes distribution in one static binary. See `docs/ARCHITECTURE.md` for the
//! map of modules and the rules between them.

pub mod cli;
pub mod roles;
pub mod store;
