//! Non-resource endpoints and the virtual (never stored) resources: health and version
//! (`health`), `/metrics`, discovery and OpenAPI (`discovery`, `openapi`), the access reviews
//! (`access_review`), and Rampart's own operations under `/rampart/v1/` (`rampart_api`,
//! certificate operations in `pki_ops`, the data a joining server fetches in
//! `server_bootstrap`), plus the join-token authenticator that guards joining (`join_tokens`).

pub(super) mod access_review;
pub(super) mod discovery;
pub(super) mod health;
pub mod join_tokens;
pub(super) mod metrics;
pub mod openapi;
pub(super) mod pki_ops;
pub(super) mod rampart_api;
pub mod server_bootstrap;
