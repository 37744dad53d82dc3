//! In-server followers and loops: caches and writers that run beside the request path for
//! the server's whole life. `follow` is the list-then-watch loop every store-fed cache uses
//! (the RBAC and CedarPolicy followers live with their owners in `rbac` and `admission`);
//! `node_graph` feeds the node authorizer's graph; `endpoint_reconciler` keeps
//! `default/kubernetes` listing the live servers of a shared datastore.

pub(super) mod endpoint_reconciler;
pub(super) mod follow;
pub(super) mod node_graph;
