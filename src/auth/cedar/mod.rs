//! Cedar: the policy language every authorization (and admission) decision is made in.
//!
//! `files` loads and strictly validates the policy tree (`policies/`, overridable with
//! `--policy-dir`); `entities` maps a request to Cedar entities; `engine` is the authorizer
//! (policy slices indexed by principal); `fail_closed` is the rule every evaluation, the
//! authorizer's and admission's, passes through: a policy that errors denies; `node_graph` precomputes the
//! node-restriction facts Cedar cannot compute itself.

mod decisions;
pub mod depends;
pub mod engine;
pub mod entities;
pub mod fail_closed;
pub mod files;
pub mod names;
pub mod node_graph;

pub use engine::{Authorizer, Compiled, Prober};
pub use files::PolicyFiles;
pub use node_graph::NodeGraph;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("invalid Cedar schema: {0}")]
    Schema(String),
    #[error("invalid Cedar policy: {0}")]
    Policy(String),
}

/// The authorizer with the system (`system/`) and operator (`authz/`) policies loaded from
/// `files`; RBAC and other sources are added by their owners with
/// [`Authorizer::set_source`].
pub fn authorizer(
    files: &PolicyFiles,
    nodes: std::sync::Arc<NodeGraph>,
) -> Result<Authorizer, Error> {
    let schema = files.authz_schema()?;
    let system = files.policies("system", &schema)?;
    let authz = files.policies("authz", &schema)?;
    let engine = Authorizer::new(schema, nodes);
    engine.set_source(
        "system",
        system.into_iter().map(Compiled::from_scope).collect(),
    );
    engine.set_source(
        "authz",
        authz.into_iter().map(Compiled::from_scope).collect(),
    );
    Ok(engine)
}
