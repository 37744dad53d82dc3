//! Kubernetes API knowledge shared by the server and its clients: the resource table,
//! selectors, resource quantities and upstream's name and label rules. No I/O here.

pub mod csr;
pub mod matching;
pub mod quantity;
pub mod resources;
pub mod selectors;
pub mod validation;
pub mod version;

pub use k8s_openapi;
pub use resources::ResourceInfo;
