//! TLS plumbing that knows nothing of Kubernetes or of the cluster PKI: a leaf module any
//! component may use (the kubelet, the API server, the join), so there is one place where an
//! outgoing connection's rustls configuration is built (`client`).
//!
//! Invariants: the crypto provider is always `ring` (the binary stays static; never aws-lc);
//! nothing here reads the cluster's PKI directory: callers hand in PEM bytes.

pub mod client;
