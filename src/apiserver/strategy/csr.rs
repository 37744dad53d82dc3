//! `certificates.k8s.io/v1` CertificateSigningRequest strategies, as upstream's
//! `pkg/registry/certificates/certificates/strategy.go`:
//!
//! - create: `spec.username/uid/groups/extra` are the requester's, whatever the client sent;
//!   the request must be a PEM `CERTIFICATE REQUEST` whose self-signature verifies; signerName
//!   and usages are required, usages from the `KeyUsage` vocabulary; expirationSeconds ≥ 600.
//! - update (main resource): spec is immutable, status is the subresources' business.
//! - `/approval`: only the Approved/Denied conditions change; they are mutually exclusive and,
//!   once set, never removed.
//! - `/status` (the signer): Approved/Denied conditions are kept from the stored object; a
//!   certificate, once issued, never changes.

use base64::Engine;
use serde_json::{json, Value};

use crate::api::csr;
use crate::apiserver::context::Ctx;
use crate::apiserver::status::{ApiError, ApiResult};

fn is_csr(ctx: &Ctx) -> bool {
    ctx.ri.group == "certificates.k8s.io" && ctx.ri.kind == "CertificateSigningRequest"
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn before_create(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    if !is_csr(ctx) {
        return Ok(());
    }
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    spec["username"] = json!(ctx.user.name);
    spec["groups"] = json!(ctx.user.groups);
    if let Some(s) = spec.as_object_mut() {
        s.remove("uid");
        s.remove("extra");
    }
    let causes = validate_spec(&obj["spec"]);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&ctx.ri, &name(obj), causes))
    }
}

fn validate_spec(spec: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    match spec["request"].as_str() {
        None | Some("") => causes.push(("spec.request".into(), "Required value".into())),
        Some(b64) => {
            let pem = base64::engine::general_purpose::STANDARD.decode(b64);
            match pem
                .map_err(|_| csr::Error::NotPem)
                .and_then(|p| csr::parse_pem(&p))
            {
                Ok(_) => {}
                Err(e) => causes.push((
                    "spec.request".into(),
                    format!("Invalid value: []byte{{...}}: {e}"),
                )),
            }
        }
    }
    match spec["signerName"].as_str() {
        None | Some("") => causes.push(("spec.signerName".into(), "Required value".into())),
        Some(s) if !valid_signer_name(s) => causes.push((
            "spec.signerName".into(),
            format!("Invalid value: {s:?}: must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        )),
        _ => {}
    }
    match spec["usages"].as_array() {
        None => causes.push((
            "spec.usages".into(),
            "Required value: usages must be provided".into(),
        )),
        Some(u) if u.is_empty() => causes.push((
            "spec.usages".into(),
            "Required value: usages must be provided".into(),
        )),
        Some(u) => {
            for (i, v) in u.iter().enumerate() {
                let s = v.as_str().unwrap_or_default();
                if !csr::KEY_USAGES.contains(&s) {
                    causes.push((
                        format!("spec.usages[{i}]"),
                        format!("Unsupported value: {s:?}"),
                    ));
                }
            }
        }
    }
    if let Some(e) = spec["expirationSeconds"].as_i64() {
        if e < 600 {
            causes.push((
                "spec.expirationSeconds".into(),
                format!("Invalid value: {e}: may not specify a duration less than 600 seconds (10 minutes)"),
            ));
        }
    }
    causes
}

fn valid_signer_name(s: &str) -> bool {
    let Some((domain, path)) = s.split_once('/') else {
        return false;
    };
    !path.is_empty()
        && domain.contains('.')
        && crate::api::validation::dns1123_subdomain(domain).is_ok()
}

fn conditions(obj: &Value) -> Vec<Value> {
    obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn is_decision(c: &Value) -> bool {
    matches!(c["type"].as_str(), Some("Approved" | "Denied"))
}

pub fn before_update(ctx: &Ctx, old: &Value, new: &mut Value) -> ApiResult<()> {
    if !is_csr(ctx) {
        return Ok(());
    }
    // Spec is immutable through every path.
    new["spec"] = old["spec"].clone();
    let n = name(new);
    let now = crate::apiserver::now_rfc3339();
    let signer = old["spec"]["signerName"].as_str().unwrap_or_default();
    match ctx.info.subresource.as_str() {
        "approval" => {
            may_use_signer(ctx, "approve", signer)?;
            let mut conds: Vec<Value> = conditions(new).into_iter().filter(is_decision).collect();
            for c in conds.iter_mut() {
                stamp(c, &now);
            }
            let approved = conds.iter().any(|c| c["type"] == "Approved");
            let denied = conds.iter().any(|c| c["type"] == "Denied");
            if approved && denied {
                return Err(ApiError::invalid(
                    &ctx.ri,
                    &n,
                    vec![(
                        "status.conditions".into(),
                        "Invalid value: Approved and Denied conditions are mutually exclusive"
                            .into(),
                    )],
                ));
            }
            for kept in conditions(old).iter().filter(|c| is_decision(c)) {
                if !conds.iter().any(|c| c["type"] == kept["type"]) {
                    return Err(ApiError::invalid(
                        &ctx.ri,
                        &n,
                        vec![(
                            "status.conditions".into(),
                            format!(
                                "Forbidden: updates may not remove a condition of type {:?}",
                                kept["type"].as_str().unwrap_or_default()
                            ),
                        )],
                    ));
                }
            }
            conds.extend(conditions(old).into_iter().filter(|c| !is_decision(c)));
            let mut status = old["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            status["conditions"] = json!(conds);
            new["status"] = status;
        }
        "status" => {
            let mut conds: Vec<Value> = conditions(new)
                .into_iter()
                .filter(|c| !is_decision(c))
                .collect();
            for c in conds.iter_mut() {
                stamp(c, &now);
            }
            let mut all: Vec<Value> = conditions(old).into_iter().filter(is_decision).collect();
            all.extend(conds);
            if !new["status"].is_object() {
                new["status"] = json!({});
            }
            new["status"]["conditions"] = json!(all);
            let old_cert = old["status"]["certificate"].as_str().unwrap_or_default();
            let new_cert = new["status"]["certificate"].as_str().unwrap_or_default();
            if !new_cert.is_empty() && old_cert != new_cert {
                may_use_signer(ctx, "sign", signer)?;
            }
            if !old_cert.is_empty() && old_cert != new_cert {
                return Err(ApiError::invalid(
                    &ctx.ri,
                    &n,
                    vec![(
                        "status.certificate".into(),
                        "Forbidden: updates may not modify existing certificate content".into(),
                    )],
                ));
            }
            if !new_cert.is_empty() && !valid_certificate(new_cert) {
                return Err(ApiError::invalid(&ctx.ri, &n, vec![(
                    "status.certificate".into(),
                    "Invalid value: \"<certificate data>\": must contain at least one CERTIFICATE PEM block".into(),
                )]));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Upstream's signer authorization: approving needs `approve`, issuing needs `sign` on the
/// `signers` resource named by the signer (or its `<domain>/*` wildcard).
fn may_use_signer(ctx: &Ctx, verb: &str, signer: &str) -> ApiResult<()> {
    let wildcard = signer
        .split_once('/')
        .map(|(domain, _)| format!("{domain}/*"))
        .unwrap_or_default();
    for name in [signer, wildcard.as_str()] {
        let attrs = crate::auth::Attributes {
            user: &ctx.user,
            verb,
            resource_request: true,
            api_group: "certificates.k8s.io",
            resource: "signers",
            subresource: "",
            namespace: "",
            name,
            path: "/apis/certificates.k8s.io/v1/signers",
        };
        if !name.is_empty() && ctx.state.enforcement.authorize(&attrs).is_allowed() {
            return Ok(());
        }
    }
    let what = if verb == "approve" { "approve" } else { "sign" };
    Err(ApiError::forbidden(format!(
        "user not permitted to {what} requests with signerName {signer:?}"
    )))
}

fn stamp(c: &mut Value, now: &str) {
    for f in ["lastUpdateTime", "lastTransitionTime"] {
        if c.get(f).is_none_or(|v| v.is_null() || v == "") {
            c[f] = json!(now);
        }
    }
    if c.get("status").is_none_or(|v| v.is_null() || v == "") {
        c["status"] = json!("True");
    }
}

/// `status.certificate` is base64 of PEM CERTIFICATE blocks, each a parseable certificate.
fn valid_certificate(b64: &str) -> bool {
    let Ok(pem) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return false;
    };
    let Ok(blocks) = crate::pki::pem::blocks(&pem, crate::pki::pem::Kind::Certificate) else {
        return false;
    };
    !blocks.is_empty()
        && blocks
            .iter()
            .all(|der| x509_parser::parse_x509_certificate(der).is_ok())
}
