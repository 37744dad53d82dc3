//! `GET /rampart/v1/server-bootstrap`: what a second server needs to serve the same cluster
//! (k3s's server bootstrap data): the cluster's root CA and signing CAs (certificates and
//! keys), the service-account signing keys and the secrets encryption keys.
//!
//! Invariants:
//! - only a *server* join token reaches it (bootstrap-token user carrying
//!   `auth::bootstrap::SERVER_TOKEN_GROUP`, not impersonated); agent tokens and every other
//!   identity, `system:masters` included, get 403 with a message naming the right token;
//! - the answer is read from this server's data directory, never from the datastore, so keys
//!   are never stored in etcd; it travels only over TLS, which the joining server verifies
//!   against the CA it pinned by the token's hash (`roles::join::pinned_ca`);
//! - leaf certificates are not shared: every server issues its own serving certificate (its
//!   own SANs) and admin identity from the shared CAs; nothing here is logged.
//!
//! Served only when the server runs on a shared datastore (`Config::ha`): a server on the
//! embedded store is a cluster of its own and answers 404.

use std::path::Path;

use base64::Engine;
use http::Response;

use crate::apiserver::edge::body::{error_response, json_response, Body};
use crate::apiserver::status::ApiError;
use crate::apiserver::State;
use crate::auth::UserInfo;

pub const PATH: &str = "/rampart/v1/server-bootstrap";

/// PKI files (under `DATA_DIR/pki`) beyond the signing CAs' `<name>.{crt,key}`: the root, the
/// service-account key pair and the CA rotation state.
const PKI_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "retiring-ca.crt",
    "retiring-intermediates.crt",
    "ca-cross.crt",
];
/// The secrets encryption keys and the cluster key that seals their published copy (under
/// `DATA_DIR`; see `store::encrypted::sync`).
const ENCRYPTION_FILES: &[&str] = &["encryption/keys.json", "encryption/cluster.key"];

/// Whether `user` holds a server join token (and is not someone acting as one).
fn is_server_token(user: &UserInfo, impersonated: bool) -> bool {
    !impersonated
        && user.name.starts_with("system:bootstrap:")
        && user
            .groups
            .iter()
            .any(|g| g == crate::auth::bootstrap::SERVER_TOKEN_GROUP)
}

pub(in crate::apiserver) fn serve(
    state: &State,
    user: &UserInfo,
    impersonated: bool,
) -> Response<Body> {
    let Some(ha) = &state.ha else {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "this server runs on its embedded store: other servers cannot join it (start every server with the same --datastore-endpoint)",
        ));
    };
    if !is_server_token(user, impersonated) {
        return error_response(&ApiError::forbidden(format!(
            "user \"{}\" cannot join as a server: only a server token (rampart token create --role server) may fetch the cluster's keys; agent tokens join nodes only",
            user.name
        )));
    }
    match collect(&ha.data_dir) {
        Ok(files) => {
            tracing::info!(user = %user.name, files = files.len(), "server bootstrap data handed to a joining server");
            json_response(200, &serde_json::json!({ "files": files }))
        }
        Err(e) => error_response(&ApiError::internal(format!(
            "cannot read the server bootstrap data: {e}"
        ))),
    }
}

/// `{relative path: base64 content}` for every shared file that exists.
fn collect(data_dir: &Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let profiles = crate::pki::profiles::builtin()?;
    let mut names: Vec<String> = PKI_FILES.iter().map(|f| format!("pki/{f}")).collect();
    for a in &profiles.authorities {
        names.push(format!("pki/{}.crt", a.name));
        names.push(format!("pki/{}.key", a.name));
    }
    names.extend(ENCRYPTION_FILES.iter().map(|f| f.to_string()));
    let mut out = serde_json::Map::new();
    for name in names {
        match std::fs::read(data_dir.join(&name)) {
            Ok(bytes) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                out.insert(name, serde_json::Value::String(b64));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // The path only: never the content.
            Err(e) => return Err(format!("{name}: {}", e.kind())),
        }
    }
    Ok(out)
}

/// Whether a path from a bootstrap answer is one a joining server may write (a fixed list:
/// a hostile answer cannot write anywhere else in the data directory).
pub fn allowed_file(name: &str) -> bool {
    let Ok(profiles) = crate::pki::profiles::builtin() else {
        return false;
    };
    ENCRYPTION_FILES.contains(&name)
        || PKI_FILES.iter().any(|f| name == format!("pki/{f}"))
        || profiles
            .authorities
            .iter()
            .any(|a| name == format!("pki/{}.crt", a.name) || name == format!("pki/{}.key", a.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_tokens_pass() {
        let server = UserInfo {
            name: "system:bootstrap:abcdef".into(),
            groups: vec![
                "system:bootstrappers".into(),
                crate::auth::bootstrap::SERVER_TOKEN_GROUP.into(),
            ],
            ..Default::default()
        };
        assert!(is_server_token(&server, false));
        assert!(!is_server_token(&server, true));
        let agent = UserInfo {
            name: "system:bootstrap:abcdef".into(),
            groups: vec![
                "system:bootstrappers".into(),
                crate::auth::bootstrap::NODE_TOKEN_GROUP.into(),
            ],
            ..Default::default()
        };
        assert!(!is_server_token(&agent, false));
        let admin = UserInfo {
            name: "admin".into(),
            groups: vec![
                "system:masters".into(),
                crate::auth::bootstrap::SERVER_TOKEN_GROUP.into(),
            ],
            ..Default::default()
        };
        assert!(!is_server_token(&admin, false));
    }

    #[test]
    fn allowed_files_are_a_fixed_list() {
        assert!(allowed_file("pki/ca.key"));
        assert!(allowed_file("encryption/keys.json"));
        assert!(!allowed_file("pki/../admin.kubeconfig"));
        assert!(!allowed_file("/etc/passwd"));
        assert!(!allowed_file("pki/apiserver-serving.key"));
        assert!(allowed_file("pki/client-ca.key"));
    }
}
