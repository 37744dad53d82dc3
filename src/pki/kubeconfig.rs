//! Kubeconfig files with embedded credentials, the format the stock kubectl reads.

use std::path::Path;

use base64::Engine;

use super::{ClientIdentity, Error};

/// Render a kubeconfig for `server` with the CA and a client identity embedded.
pub fn render(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    id: &ClientIdentity,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster,
            "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": b64(&id.cert_pem),
                "client-key-data": b64(&id.key_pem),
            },
        }],
        "contexts": [{
            "name": format!("{user}@{cluster}"),
            "context": {"cluster": cluster, "user": user, "namespace": "default"},
        }],
        "current-context": format!("{user}@{cluster}"),
        "preferences": {},
    });
    // JSON is valid YAML, and kubectl reads either; pretty-print so people can read it too.
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Write a kubeconfig (it holds a private key: 0600).
pub fn write(path: &Path, contents: &str) -> Result<(), Error> {
    super::files::write_atomic(path, contents.as_bytes(), 0o600)
}
