//! The agent's list of API servers (k3s's agent load balancer, without the local proxy): the
//! `--server` it was started with plus every address in the `default/kubernetes` Endpoints,
//! which the servers' lease-based endpoint reconciler keeps listing every live server.
//! When the server in use stops answering, the agent moves to the next one that does.
//!
//! Invariants: the `--server` URL is never dropped from the list (the Endpoints may be
//! momentarily stale or empty); the order is stable, so every agent tries servers in the
//! same order; the list only holds `https://` URLs built from IP addresses in the Endpoints.

use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;

/// How long one server gets to answer before the agent tries the next.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServerList {
    configured: String,
    servers: Vec<String>,
    current: usize,
}

impl ServerList {
    pub fn new(configured: &str) -> Self {
        let configured = configured.trim_end_matches('/').to_string();
        ServerList {
            servers: vec![configured.clone()],
            configured,
            current: 0,
        }
    }

    /// The server in use.
    pub fn current(&self) -> &str {
        &self.servers[self.current]
    }

    /// Every server but the current one, in the order to try them.
    pub fn others(&self) -> Vec<String> {
        let n = self.servers.len();
        (1..n)
            .map(|i| self.servers[(self.current + i) % n].clone())
            .collect()
    }

    pub fn switch_to(&mut self, server: &str) {
        if let Some(i) = self.servers.iter().position(|s| s == server) {
            self.current = i;
        }
    }

    pub fn all(&self) -> &[String] {
        &self.servers
    }

    /// Replace the learnt servers with those of `ep`; keeps `--server` and the current one.
    pub fn learn(&mut self, ep: &Endpoints) {
        let current = self.current().to_string();
        let mut next = vec![self.configured.clone()];
        for subset in ep.subsets.iter().flatten() {
            let port = subset
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("https") || p.name.is_none())
                .map(|p| p.port);
            let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for a in subset.addresses.iter().flatten() {
                let Ok(ip) = a.ip.parse::<std::net::IpAddr>() else {
                    continue;
                };
                let url = format!("https://{}", std::net::SocketAddr::new(ip, port));
                if !next.contains(&url) {
                    next.push(url);
                }
            }
        }
        if !next.contains(&current) {
            next.push(current.clone());
        }
        next[1..].sort();
        self.servers = next;
        self.switch_to(&current);
    }
}

/// `default/kubernetes` as the servers keep it (nodes may read Endpoints).
pub async fn fetch(client: &kube::Client) -> Result<Endpoints, kube::Error> {
    let api: kube::Api<Endpoints> = kube::Api::namespaced(client.clone(), "default");
    api.get("kubernetes").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(ips: &[&str], port: i32) -> Endpoints {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect::<Vec<_>>(),
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }))
        .unwrap()
    }

    #[test]
    fn learns_and_fails_over_in_order() {
        let mut l = ServerList::new("https://127.0.0.1:6443/");
        assert_eq!(l.current(), "https://127.0.0.1:6443");
        assert!(l.others().is_empty());
        l.learn(&endpoints(
            &["127.0.0.3", "127.0.0.1", "127.0.0.2", "not-an-ip"],
            6443,
        ));
        assert_eq!(
            l.all(),
            [
                "https://127.0.0.1:6443",
                "https://127.0.0.2:6443",
                "https://127.0.0.3:6443"
            ]
        );
        assert_eq!(
            l.others(),
            ["https://127.0.0.2:6443", "https://127.0.0.3:6443"]
        );
        l.switch_to("https://127.0.0.2:6443");
        assert_eq!(l.current(), "https://127.0.0.2:6443");
        assert_eq!(
            l.others(),
            ["https://127.0.0.3:6443", "https://127.0.0.1:6443"]
        );
        // Endpoints without the current server (it just died and expired) keep it listed
        // until the agent moves; the configured one is never dropped.
        l.learn(&endpoints(&["127.0.0.3"], 6443));
        assert_eq!(l.current(), "https://127.0.0.2:6443");
        assert!(l.all().contains(&"https://127.0.0.1:6443".to_string()));
        l.learn(&endpoints(&[], 6443));
        assert_eq!(l.current(), "https://127.0.0.2:6443");
    }
}
