//! The transport edge: everything between a TCP connection and a classified, authenticated,
//! authorized request, and the bytes that go back. TLS and the connection limits (`tls`,
//! `connections`), the accept loop and the top of the request path (`serve`), request
//! classification (`request`), impersonation, request bodies in and responses out (`body`,
//! `yaml`, `offload` for CPU-heavy decoding), `Warning` headers (`warnings`) and the request
//! path's side of the audit log (`audit`).
//!
//! Nothing here knows a resource's rules: resource requests leave this room for `handlers`,
//! non-resource ones for `endpoints`.

pub(super) mod audit;
pub(super) mod body;
pub(super) mod connections;
pub(super) mod impersonation;
pub(super) mod offload;
pub(super) mod request;
pub(super) mod serve;
pub(super) mod tls;
pub(super) mod warnings;
pub(super) mod yaml;
