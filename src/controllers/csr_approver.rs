//! CSR auto-approver for node certificates, as upstream's `csrapproving` controller plus the
//! kubelet-serving checks cluster operators usually add by hand:
//!
//! - `kubernetes.io/kube-apiserver-client-kubelet`, subject exactly
//!   `CN=system:node:<name>, O=system:nodes`, usages ⊆ {digital signature, key encipherment,
//!   client auth} with client auth, no SANs: approved when requested by a join token
//!   (`system:bootstrappers`) for a node name no other key owns, or by `system:node:<name>`
//!   itself (renewal, may change key). Denied: the same signer asked by a node or join token
//!   for any other subject (another node's name, `system:masters`, extra organisations), or a
//!   join for a name owned by another key.
//! - `kubernetes.io/kubelet-serving` from `system:node:<name>` for its own subject, with server
//!   auth, DNS SANs ⊆ {name, the Node's Hostname addresses}, IP SANs ⊆ the Node's addresses.
//!
//! Everything else stays pending for a human (`kubectl certificate approve|deny`).
//!
//! Ownership of node names: ConfigMap `kube-system/rampart-node-identities`, one key per node
//! name whose value is the SHA-256 of the owning key's SubjectPublicKeyInfo. Written (with
//! compare-and-swap) before a join or renewal is approved. Deleting the entry releases a name.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::Api;

use crate::api::csr::{self, SIGNER_CLIENT, SIGNER_CLIENT_KUBELET, SIGNER_KUBELET_SERVING};

pub const OWNERS_CONFIGMAP: &str = "rampart-node-identities";
const NODE_PREFIX: &str = "system:node:";
/// Each node's service proxy has its own identity: `CN=system:kube-proxy:<node>`, in the
/// `system:node-proxier` group (upstream's kube-proxy role binds that group).
pub const PROXY_PREFIX: &str = "system:kube-proxy:";
pub const PROXY_GROUP: &str = "system:node-proxier";

/// What to do with one pending CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve(String),
    Deny(String),
    /// Not ours to decide.
    Leave,
}

/// Run until the process stops.
pub async fn run(client: kube::Client) -> Result<(), super::Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let stream = watcher(api.clone(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c))) => handle(&client, &api, c).await,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "CSR approver watch error; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return Ok(()),
            },
            _ = resync.tick() => {
                // Serving CSRs may wait for their Node; retry pending ones now and then.
                if let Ok(list) = api.list(&ListParams::default()).await {
                    for c in list.items {
                        handle(&client, &api, c).await;
                    }
                }
            }
        }
    }
}

fn decided(c: &CertificateSigningRequest) -> bool {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
        })
}

async fn handle(
    client: &kube::Client,
    api: &Api<CertificateSigningRequest>,
    mut c: CertificateSigningRequest,
) {
    if decided(&c) {
        return;
    }
    let name = c.metadata.name.clone().unwrap_or_default();
    let Ok(req) = csr::parse_pem(&c.spec.request.0) else {
        return;
    };
    let requester = c.spec.username.clone().unwrap_or_default();
    let groups = c.spec.groups.clone().unwrap_or_default();
    let usages = c.spec.usages.clone().unwrap_or_default();
    let mut decision = decide(&c.spec.signer_name, &requester, &groups, &usages, &req);
    let node_name = req
        .common_name
        .strip_prefix(NODE_PREFIX)
        .unwrap_or_default()
        .to_string();
    if let Decision::Approve(_) = &decision {
        decision = match c.spec.signer_name.as_str() {
            SIGNER_CLIENT => decision,
            SIGNER_CLIENT_KUBELET => {
                let renewal = requester == req.common_name;
                match claim(client, &node_name, &req.public_key_sha256(), renewal).await {
                    Ok(None) => decision,
                    Ok(Some(why)) => Decision::Deny(why),
                    Err(e) => {
                        tracing::warn!(csr = %name, error = %e, "cannot record node ownership; will retry");
                        return;
                    }
                }
            }
            _ => match serving_sans_ok(client, &node_name, &req).await {
                Ok(None) => decision,
                Ok(Some(why)) => Decision::Deny(why),
                Err(e) => {
                    tracing::debug!(csr = %name, error = %e, "serving CSR waits for its Node");
                    return;
                }
            },
        };
    }
    let (ty, reason, message) = match decision {
        Decision::Leave => return,
        Decision::Approve(m) => ("Approved", "AutoApproved", m),
        Decision::Deny(m) => ("Denied", "AutoDenied", m),
    };
    let status = c
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: ty.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.clone()),
            ..Default::default()
        });
    match api
        .replace_subresource::<CertificateSigningRequest>(
            "approval",
            &name,
            &PostParams::default(),
            &c,
        )
        .await
    {
        Ok(_) => tracing::info!(csr = %name, decision = ty, %message, "CSR decided"),
        Err(e) => {
            tracing::warn!(csr = %name, error = %e, "cannot write the CSR decision; will retry")
        }
    }
}

/// The pure part of the decision: subject, usages and requester against the signer's rules.
pub fn decide(
    signer: &str,
    requester: &str,
    groups: &[String],
    usages: &[String],
    req: &csr::Request,
) -> Decision {
    let bootstrap = groups.iter().any(|g| g == "system:bootstrappers");
    let node_requester = requester
        .strip_prefix(NODE_PREFIX)
        .filter(|n| !n.is_empty());
    if !bootstrap && node_requester.is_none() {
        return Decision::Leave;
    }
    let node = req
        .common_name
        .strip_prefix(NODE_PREFIX)
        .filter(|n| !n.is_empty());
    let subject_ok = node.is_some() && req.organizations == ["system:nodes"];
    match signer {
        SIGNER_CLIENT_KUBELET => {
            if !subject_ok {
                return Decision::Deny(format!(
                    "a node client certificate must have subject CN=system:node:<name>, O=system:nodes (asked for CN={:?}, O={:?})",
                    req.common_name, req.organizations
                ));
            }
            let allowed = ["digital signature", "key encipherment", "client auth"];
            if usages.iter().any(|u| !allowed.contains(&u.as_str()))
                || !usages.iter().any(|u| u == "client auth")
            {
                return Decision::Deny(format!("node client certificates allow only the usages {allowed:?} and need client auth"));
            }
            if req.has_sans() {
                return Decision::Deny(
                    "node client certificates carry no subject alternative names".into(),
                );
            }
            match node_requester {
                Some(n) if Some(n) == node => {
                    Decision::Approve(format!("renewal of the client certificate of node {n}"))
                }
                Some(n) => Decision::Deny(format!(
                    "node {n} may not request a certificate for node {}",
                    node.unwrap_or_default()
                )),
                None => Decision::Approve(format!(
                    "join of node {} with a join token",
                    node.unwrap_or_default()
                )),
            }
        }
        SIGNER_KUBELET_SERVING => {
            let Some(n) = node_requester else {
                return Decision::Leave;
            };
            if !subject_ok || node != Some(n) {
                return Decision::Deny(format!(
                    "node {n} may only request a serving certificate for CN=system:node:{n}, O=system:nodes"
                ));
            }
            let allowed = ["digital signature", "key encipherment", "server auth"];
            if usages.iter().any(|u| !allowed.contains(&u.as_str()))
                || !usages.iter().any(|u| u == "server auth")
            {
                return Decision::Deny(format!("kubelet serving certificates allow only the usages {allowed:?} and need server auth"));
            }
            if req.other_sans > 0 {
                return Decision::Deny(
                    "kubelet serving certificates may carry only DNS and IP names".into(),
                );
            }
            Decision::Approve(format!("serving certificate of node {n}"))
        }
        SIGNER_CLIENT => {
            // Only the node's own proxy identity; any other client certificate waits for a
            // human (`kubectl certificate approve`).
            let Some(n) = node_requester else {
                return Decision::Leave;
            };
            if req.common_name.strip_prefix(PROXY_PREFIX) != Some(n)
                || req.organizations != [PROXY_GROUP]
            {
                return Decision::Leave;
            }
            let allowed = ["digital signature", "key encipherment", "client auth"];
            if usages.iter().any(|u| !allowed.contains(&u.as_str()))
                || !usages.iter().any(|u| u == "client auth")
                || req.has_sans()
            {
                return Decision::Deny(format!(
                    "the proxy certificate of node {n} allows only the usages {allowed:?}, needs client auth and carries no SANs"
                ));
            }
            Decision::Approve(format!("service proxy identity of node {n}"))
        }
        _ => Decision::Leave,
    }
}

/// Record that `key_hash` owns `node`. `Some(reason)` when another key owns it and this is not
/// a renewal by the node itself.
async fn claim(
    client: &kube::Client,
    node: &str,
    key_hash: &str,
    renewal: bool,
) -> Result<Option<String>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    for _ in 0..5 {
        let existing = api
            .get_opt(OWNERS_CONFIGMAP)
            .await
            .map_err(|e| e.to_string())?;
        let mut cm = existing.clone().unwrap_or_else(|| ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(OWNERS_CONFIGMAP.into()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let data = cm.data.get_or_insert_with(BTreeMap::new);
        match data.get(node) {
            Some(owner) if owner == key_hash => return Ok(None),
            Some(_) if !renewal => {
                return Ok(Some(format!(
                    "node name {node} is already registered with a different key; delete key {node:?} from ConfigMap kube-system/{OWNERS_CONFIGMAP} to let a new machine take the name"
                )))
            }
            _ => {
                data.insert(node.to_string(), key_hash.to_string());
            }
        }
        let result = if existing.is_some() {
            api.replace(OWNERS_CONFIGMAP, &PostParams::default(), &cm)
                .await
        } else {
            api.create(&PostParams::default(), &cm).await
        };
        match result {
            Ok(_) => return Ok(None),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("too many conflicts updating node ownership".into())
}

/// Check a serving CSR's SANs against the Node's addresses. `Err` while the Node is absent.
async fn serving_sans_ok(
    client: &kube::Client,
    node: &str,
    req: &csr::Request,
) -> Result<Option<String>, String> {
    let api: Api<Node> = Api::all(client.clone());
    let n = api
        .get_opt(node)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("node {node} is not registered yet"))?;
    let addrs = n.status.and_then(|s| s.addresses).unwrap_or_default();
    let mut dns: Vec<String> = vec![node.to_string()];
    dns.extend(
        addrs
            .iter()
            .filter(|a| a.type_ == "Hostname")
            .map(|a| a.address.clone()),
    );
    let ips: Vec<std::net::IpAddr> = addrs
        .iter()
        .filter_map(|a| a.address.parse().ok())
        .collect();
    if let Some(d) = req.dns_names.iter().find(|d| !dns.contains(d)) {
        return Ok(Some(format!("DNS name {d:?} is not a name of node {node}")));
    }
    if let Some(ip) = req.ip_addresses.iter().find(|ip| !ips.contains(ip)) {
        return Ok(Some(format!(
            "IP address {ip} is not an address of node {node}"
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cn: &str, orgs: &[&str], dns: &[&str]) -> csr::Request {
        csr::Request {
            common_name: cn.into(),
            organizations: orgs.iter().map(|s| s.to_string()).collect(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ip_addresses: Vec::new(),
            other_sans: 0,
            public_key_der: vec![1, 2, 3],
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_node_gets_only_its_own_proxy_identity() {
        let usages = s(&["digital signature", "client auth"]);
        let own = req("system:kube-proxy:a", &["system:node-proxier"], &[]);
        let other = req("system:kube-proxy:b", &["system:node-proxier"], &[]);
        let masters = req("system:kube-proxy:a", &["system:masters"], &[]);
        let d =
            |requester: &str, r: &csr::Request| decide(SIGNER_CLIENT, requester, &[], &usages, r);
        assert!(matches!(d("system:node:a", &own), Decision::Approve(_)));
        assert!(matches!(d("system:node:a", &other), Decision::Leave));
        assert!(matches!(d("system:node:a", &masters), Decision::Leave));
        assert!(matches!(d("alice", &own), Decision::Leave));
        let server_usage = decide(
            SIGNER_CLIENT,
            "system:node:a",
            &[],
            &s(&["server auth"]),
            &own,
        );
        assert!(matches!(server_usage, Decision::Deny(_)));
    }

    #[test]
    fn node_client_rules() {
        let boot = s(&["system:bootstrappers", "system:authenticated"]);
        let usages = s(&["digital signature", "client auth"]);
        let node = req("system:node:a", &["system:nodes"], &[]);
        let join = decide(
            SIGNER_CLIENT_KUBELET,
            "system:bootstrap:abcdef",
            &boot,
            &usages,
            &node,
        );
        assert!(matches!(join, Decision::Approve(_)));
        let renew = decide(
            SIGNER_CLIENT_KUBELET,
            "system:node:a",
            &s(&["system:nodes"]),
            &usages,
            &node,
        );
        assert!(matches!(renew, Decision::Approve(m) if m.contains("renewal")));
        let other = decide(
            SIGNER_CLIENT_KUBELET,
            "system:node:b",
            &s(&["system:nodes"]),
            &usages,
            &node,
        );
        assert!(matches!(other, Decision::Deny(_)));
        let masters = req("system:node:a", &["system:nodes", "system:masters"], &[]);
        assert!(matches!(
            decide(
                SIGNER_CLIENT_KUBELET,
                "system:bootstrap:x",
                &boot,
                &usages,
                &masters
            ),
            Decision::Deny(_)
        ));
        let sans = req("system:node:a", &["system:nodes"], &["a"]);
        assert!(matches!(
            decide(
                SIGNER_CLIENT_KUBELET,
                "system:bootstrap:x",
                &boot,
                &usages,
                &sans
            ),
            Decision::Deny(_)
        ));
        let server_usage = s(&["server auth"]);
        assert!(matches!(
            decide(
                SIGNER_CLIENT_KUBELET,
                "system:bootstrap:x",
                &boot,
                &server_usage,
                &node
            ),
            Decision::Deny(_)
        ));
        // Humans decide for themselves, and other signers are not ours.
        assert_eq!(
            decide(
                SIGNER_CLIENT_KUBELET,
                "admin",
                &s(&["system:masters"]),
                &usages,
                &masters
            ),
            Decision::Leave
        );
        assert_eq!(
            decide(
                "kubernetes.io/kube-apiserver-client",
                "system:bootstrap:x",
                &boot,
                &usages,
                &node
            ),
            Decision::Leave
        );
    }

    #[test]
    fn serving_rules() {
        let nodes = s(&["system:nodes"]);
        let usages = s(&["digital signature", "server auth"]);
        let own = req("system:node:a", &["system:nodes"], &["a"]);
        assert!(matches!(
            decide(
                SIGNER_KUBELET_SERVING,
                "system:node:a",
                &nodes,
                &usages,
                &own
            ),
            Decision::Approve(_)
        ));
        assert!(matches!(
            decide(
                SIGNER_KUBELET_SERVING,
                "system:node:b",
                &nodes,
                &usages,
                &own
            ),
            Decision::Deny(_)
        ));
        assert_eq!(
            decide(
                SIGNER_KUBELET_SERVING,
                "system:bootstrap:x",
                &s(&["system:bootstrappers"]),
                &usages,
                &own
            ),
            Decision::Leave
        );
        assert!(matches!(
            decide(
                SIGNER_KUBELET_SERVING,
                "system:node:a",
                &nodes,
                &s(&["client auth"]),
                &own
            ),
            Decision::Deny(_)
        ));
    }
}
