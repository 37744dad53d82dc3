//! The health check node port server for `externalTrafficPolicy: Local` LoadBalancer Services
//! (upstream's `pkg/proxy/healthcheck/service_health.go`): on each such Service's
//! `spec.healthCheckNodePort` the proxy answers HTTP with the number of ready endpoints on this
//! node — 200 when there is at least one (and the proxy's last sync succeeded), 503 otherwise —
//! so an external load balancer sends traffic only to nodes that can keep the client address.
//!
//! Upstream's response, byte for byte in its fields: headers `Content-Type: application/json`,
//! `X-Content-Type-Options: nosniff`, `X-Load-Balancing-Endpoint-Weight: <count>`, body
//! `{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":bool}`
//! (indented with tabs as its dedented template). Any path and method get the same answer.
//!
//! Invariants: one listener per port, started and stopped by [`HealthServers::sync`] from the
//! same stores the ruleset is computed from; a request head is read for at most
//! [`READ_TIMEOUT`] and [`MAX_HEAD`] bytes and each listener serves at most
//! [`MAX_CONNECTIONS`] connections at once (nothing a peer sends can hold memory or tasks);
//! a port that cannot be bound is retried at the next sync.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_HEAD: usize = 4096;
pub const MAX_CONNECTIONS: usize = 64;

/// What one health check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: usize,
}

/// The health check ports this node should serve: every LoadBalancer Service with
/// `externalTrafficPolicy: Local` and a health check node port. Pure.
pub fn plan(services: &[&Service], slices: &[&EndpointSlice], node: &str) -> BTreeMap<u16, Check> {
    let mut out = BTreeMap::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() != Some("LoadBalancer")
            || spec.external_traffic_policy.as_deref() != Some("Local")
        {
            continue;
        }
        let Some(port) = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        // Distinct addresses: one endpoint listed in several slices (or for several ports)
        // counts once, as upstream counts endpoints, not endpoint ports.
        let mut local = std::collections::BTreeSet::new();
        for s in slices.iter().filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .is_some_and(|n| n == name)
        }) {
            for e in s.endpoints.iter().flatten() {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if ready && e.node_name.as_deref() == Some(node) {
                    local.extend(e.addresses.iter().cloned());
                }
            }
        }
        out.insert(
            port,
            Check {
                namespace: ns.to_string(),
                name: name.to_string(),
                local_endpoints: local.len(),
            },
        );
    }
    out
}

/// Upstream's answer for `check`: (status code, head, body).
pub fn response(check: &Check, proxy_healthy: bool) -> Vec<u8> {
    let ok = check.local_endpoints > 0 && proxy_healthy;
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
        serde_json::Value::from(check.namespace.as_str()),
        serde_json::Value::from(check.name.as_str()),
        check.local_endpoints,
        proxy_healthy
    );
    let status = if ok {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        check.local_endpoints,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

struct Listener {
    check: Arc<std::sync::RwLock<Check>>,
    task: tokio::task::JoinHandle<()>,
}

/// The running health check listeners of this node.
pub struct HealthServers {
    bind: Ipv4Addr,
    healthy: Arc<AtomicBool>,
    listeners: BTreeMap<u16, Listener>,
}

impl HealthServers {
    /// Listeners bound on `bind` (0.0.0.0 as upstream, unless told otherwise).
    pub fn new(bind: Ipv4Addr) -> HealthServers {
        HealthServers {
            bind,
            healthy: Arc::new(AtomicBool::new(true)),
            listeners: BTreeMap::new(),
        }
    }

    /// The ports being served now.
    pub fn ports(&self) -> Vec<u16> {
        self.listeners.keys().copied().collect()
    }

    /// Serve exactly `wanted`; `proxy_healthy` is whether the last sync was applied.
    pub async fn sync(&mut self, wanted: BTreeMap<u16, Check>, proxy_healthy: bool) {
        self.healthy.store(proxy_healthy, Ordering::Relaxed);
        self.listeners.retain(|port, l| {
            let keep = wanted.contains_key(port);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for (port, check) in wanted {
            if let Some(l) = self.listeners.get(&port) {
                if let Ok(mut c) = l.check.write() {
                    *c = check;
                }
                continue;
            }
            let addr = SocketAddr::from((self.bind, port));
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, service = %format!("{}/{}", check.namespace, check.name),
                        error = %e, "cannot serve the health check node port; retrying at the next sync");
                    continue;
                }
            };
            let check = Arc::new(std::sync::RwLock::new(check));
            let task = tokio::spawn(serve(listener, check.clone(), self.healthy.clone()));
            self.listeners.insert(port, Listener { check, task });
        }
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.task.abort();
        }
    }
}

async fn serve(
    listener: TcpListener,
    check: Arc<std::sync::RwLock<Check>>,
    healthy: Arc<AtomicBool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            // Out of descriptors or the like: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            continue; // dropped: the peer sees a reset and retries, as with a full backlog
        }
        let check = check.clone();
        let healthy = healthy.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(READ_TIMEOUT, async {
                while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if matches!(read, Ok(true)) {
                let c = check.read().map(|c| c.clone()).ok();
                if let Some(c) = c {
                    let _ = conn
                        .write_all(&response(&c, healthy.load(Ordering::Relaxed)))
                        .await;
                    let _ = conn.shutdown().await;
                }
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plan_counts_ready_local_endpoints_once() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000, "ports": [{"port": 80}]}
        })).unwrap();
        let cluster: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "c"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "ports": [{"port": 80}]}
        })).unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.42.0.2"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.3"], "nodeName": "n1", "conditions": {"ready": false}},
                {"addresses": ["10.42.1.2"], "nodeName": "n2", "conditions": {"ready": true}},
            ]
        })).unwrap();
        let dup = EndpointSlice {
            metadata: kube::api::ObjectMeta {
                name: Some("web-2".into()),
                ..slice.metadata.clone()
            },
            ..slice.clone()
        };
        let p = plan(&[&svc, &cluster], &[&slice, &dup], "n1");
        assert_eq!(p.len(), 1);
        assert_eq!(p[&31000].local_endpoints, 1);
        assert_eq!(plan(&[&svc], &[&slice], "n3")[&31000].local_endpoints, 0);
    }

    #[test]
    fn upstream_response() {
        let c = Check {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let r = String::from_utf8(response(&c, true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("X-Load-Balancing-Endpoint-Weight: 2\r\n"));
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v,
            json!({"service": {"namespace": "default", "name": "web"}, "localEndpoints": 2, "serviceProxyHealthy": true})
        );
        let none = Check {
            local_endpoints: 0,
            ..c.clone()
        };
        assert!(String::from_utf8(response(&none, true))
            .unwrap()
            .starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(String::from_utf8(response(&c, false))
            .unwrap()
            .starts_with("HTTP/1.1 503"));
    }

    #[tokio::test]
    async fn serves_and_stops_ports() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut hs = HealthServers::new(Ipv4Addr::LOCALHOST);
        let check = Check {
            namespace: "ns".into(),
            name: "s".into(),
            local_endpoints: 1,
        };
        hs.sync(BTreeMap::from([(port, check.clone())]), true).await;
        assert_eq!(hs.ports(), [port]);
        let get = || async move {
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await?;
            let mut out = String::new();
            c.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        assert!(get().await.unwrap().starts_with("HTTP/1.1 200"));
        let zero = Check {
            local_endpoints: 0,
            ..check
        };
        hs.sync(BTreeMap::from([(port, zero)]), true).await;
        let r = get().await.unwrap();
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("\"localEndpoints\": 0"), "{r}");
        hs.sync(BTreeMap::new(), true).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(get().await.is_err(), "the listener is gone");
    }
}
