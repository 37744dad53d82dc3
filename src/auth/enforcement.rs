//! Enforcement: the authorizer, the RBAC state compiled into it, admission and the audit log,
//! held by the API server as one value.
//!
//! Invariant: outside a `bench-bypass` build every request is authorized, admitted and
//! audited. The "off" variant ([`Enforcement::Bypassed`]) exists only under that Cargo feature
//! (the overhead benchmark's), so no flag, variable or `None` can switch enforcement off in a
//! release or CI binary: the accessors below answer `None` only in a build that has the
//! variant, and the "allow" of a bypassed authorizer is decided here, once.

use std::sync::Arc;

use super::admission::Admission;
use super::audit::Sink;
use super::cedar::Authorizer;
use super::rbac::Rbac;
use super::{Attributes, Decision};

/// What enforces the API server's rules.
#[derive(Clone)]
pub enum Enforcement {
    On(Arc<Enforcers>),
    /// Authorization, admission and audit switched off: only the `authz` overhead benchmark
    /// builds this (see `bench-bypass` in Cargo.toml).
    #[cfg(feature = "bench-bypass")]
    Bypassed,
}

/// The parts of [`Enforcement::On`].
pub struct Enforcers {
    pub authorizer: Arc<Authorizer>,
    /// The live RBAC state, compiled into `authorizer`'s `rbac` source.
    pub rbac: Arc<Rbac>,
    pub admission: Arc<Admission>,
    pub audit: Arc<Sink>,
}

impl Enforcement {
    /// Everything on (the only constructor outside benchmark builds).
    pub fn on(authorizer: Arc<Authorizer>, admission: Arc<Admission>, audit: Arc<Sink>) -> Self {
        Self::On(Arc::new(Enforcers {
            rbac: Rbac::new(authorizer.clone()),
            authorizer,
            admission,
            audit,
        }))
    }

    /// The enforcers; `None` only in a `bench-bypass` build that switched them off.
    pub fn enforcers(&self) -> Option<&Arc<Enforcers>> {
        match self {
            Self::On(e) => Some(e),
            #[cfg(feature = "bench-bypass")]
            Self::Bypassed => None,
        }
    }

    /// Decide one request (a bypassed server allows everything).
    pub fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        match self {
            Self::On(e) => e.authorizer.authorize(attrs),
            #[cfg(feature = "bench-bypass")]
            Self::Bypassed => Decision::allow(Vec::new()),
        }
    }

    pub fn authorizer(&self) -> Option<&Arc<Authorizer>> {
        self.enforcers().map(|e| &e.authorizer)
    }

    pub fn rbac(&self) -> Option<&Arc<Rbac>> {
        self.enforcers().map(|e| &e.rbac)
    }

    pub fn admission(&self) -> Option<&Arc<Admission>> {
        self.enforcers().map(|e| &e.admission)
    }

    pub fn audit(&self) -> Option<&Arc<Sink>> {
        self.enforcers().map(|e| &e.audit)
    }

    /// Whether admission (built-in plugins and Cedar admission policies) runs.
    pub fn admits(&self) -> bool {
        self.enforcers().is_some()
    }
}
