//! A pod's `/etc/resolv.conf`, as upstream's kubelet (`pkg/kubelet/network/dns/dns.go`)
//! builds it from `dnsPolicy` and `dnsConfig`:
//!
//! - `ClusterFirst` (the default): `nameserver <cluster DNS>`, `search <ns>.svc.<domain>
//!   svc.<domain> <domain>` followed by the node's search domains, `options ndots:5`; a
//!   hostNetwork pod with ClusterFirst gets the node's resolv.conf instead (upstream's rule).
//! - `ClusterFirstWithHostNet`: the cluster form, also with hostNetwork.
//! - `Default`: the node's resolv.conf (nameservers, search, options).
//! - `None`: only what `dnsConfig` says.
//!
//! `dnsConfig` is then merged in: nameservers and search domains appended without duplicates,
//! options merged by name (the pod's value wins). Limits as upstream: 3 nameservers, 32
//! search domains of at most 2048 characters in all (the rest is dropped, as the kubelet
//! does after warning).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// What the node knows about DNS.
#[derive(Debug, Clone)]
pub struct NodeDns {
    /// `--cluster-dns` (empty: ClusterFirst falls back to the node's resolv.conf, as upstream).
    pub cluster_dns: Vec<IpAddr>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--resolv-conf`: the node's resolver configuration.
    pub resolv_conf: PathBuf,
}

impl Default for NodeDns {
    fn default() -> Self {
        NodeDns {
            cluster_dns: vec![IpAddr::from([10, 43, 0, 10])],
            cluster_domain: "cluster.local".into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// A parsed resolv.conf.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Parse a resolv.conf as the kubelet does (`parseResolvConf`): the last `search` line wins,
/// trailing dots are dropped, comments ignored.
pub fn parse(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => r.nameservers.extend(words.next().map(str::to_string)),
            Some("search") => {
                r.searches = words.map(|w| w.trim_end_matches('.').to_string()).collect();
            }
            Some("options") => r.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    r
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// Options by name (`ndots:5` → `ndots`); a later value replaces an earlier one in place.
fn merge_options(list: &mut Vec<String>, name: &str, value: Option<&str>) {
    let rendered = match value {
        Some(v) => format!("{name}:{v}"),
        None => name.to_string(),
    };
    match list.iter_mut().find(|o| o.split(':').next() == Some(name)) {
        Some(existing) => *existing = rendered,
        None => list.push(rendered),
    }
}

/// The resolv.conf for `pod` on this node (`host` is the node's resolv.conf text).
pub fn build(pod: &Pod, node: &NodeDns, host: &str) -> Resolv {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "Default" => Some(false),
        // ClusterFirst: hostNetwork pods use the node's resolvers (upstream).
        _ => Some(!host_network),
    };
    let host = parse(host);
    let mut r = match cluster {
        None => Resolv::default(),
        Some(true) if !node.cluster_dns.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = &node.cluster_domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            push_unique(&mut searches, host.searches);
            Resolv {
                nameservers: node.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        Some(_) => host,
    };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        push_unique(
            &mut r.nameservers,
            cfg.nameservers.clone().unwrap_or_default(),
        );
        push_unique(
            &mut r.searches,
            cfg.searches
                .iter()
                .flatten()
                .map(|s| s.trim_end_matches('.').to_string()),
        );
        for o in cfg.options.iter().flatten() {
            if let Some(name) = &o.name {
                merge_options(&mut r.options, name, o.value.as_deref());
            }
        }
    }
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    let mut chars = 0;
    r.searches.retain(|s| {
        chars += s.len() + 1;
        chars <= MAX_SEARCH_CHARS + 1
    });
    r
}

pub fn render(r: &Resolv) -> String {
    let mut out = String::new();
    for n in &r.nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    if !r.options.is_empty() {
        out.push_str(&format!("options {}\n", r.options.join(" ")));
    }
    out
}

/// Write `pod_dir/resolv.conf` (bind-mounted at `/etc/resolv.conf` in every container).
pub fn write(pod_dir: &Path, pod: &Pod, node: &NodeDns) -> std::io::Result<()> {
    let host = std::fs::read_to_string(&node.resolv_conf).unwrap_or_default();
    std::fs::write(
        pod_dir.join("resolv.conf"),
        render(&build(pod, node, &host)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOST: &str = "# generated\nnameserver 192.0.2.53\nsearch corp.example. lab.example\noptions edns0 ndots:1\n";

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec}),
        )
        .unwrap()
    }

    fn conf(spec: serde_json::Value) -> String {
        render(&build(&pod(spec), &NodeDns::default(), HOST))
    }

    #[test]
    fn cluster_first() {
        assert_eq!(
            conf(json!({"containers": []})),
            "nameserver 10.43.0.10\nsearch team.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\noptions ndots:5\n"
        );
        // hostNetwork with ClusterFirst: the node's resolvers.
        let host_form =
            "nameserver 192.0.2.53\nsearch corp.example lab.example\noptions edns0 ndots:1\n";
        assert_eq!(
            conf(json!({"hostNetwork": true, "containers": []})),
            host_form
        );
        assert_eq!(
            conf(json!({"dnsPolicy": "Default", "containers": []})),
            host_form
        );
        assert!(conf(
            json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": []})
        )
        .starts_with("nameserver 10.43.0.10\n"));
    }

    #[test]
    fn none_and_dns_config() {
        assert_eq!(
            conf(json!({"dnsPolicy": "None", "containers": [], "dnsConfig": {
                "nameservers": ["1.2.3.4", "1.2.3.4"], "searches": ["a.example."],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})),
            "nameserver 1.2.3.4\nsearch a.example\noptions ndots:2 edns0\n"
        );
        // Merged onto ClusterFirst: the pod's ndots wins in place, 3 nameservers at most.
        assert_eq!(
            conf(json!({"containers": [], "dnsConfig": {
                "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"], "searches": ["team.svc.cluster.local", "x.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}]}})),
            "nameserver 10.43.0.10\nnameserver 1.1.1.1\nnameserver 2.2.2.2\nsearch team.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example x.example\noptions ndots:1 single-request\n"
        );
    }
}
