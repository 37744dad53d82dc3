//! networking.k8s.io/v1 printers: `Ingress`, `IngressClass`,
//! `NetworkPolicy`, `ServiceCIDR` and `IPAddress`.
//!
//! Copies upstream `printIngress` (`formatHosts`, `formatPorts`,
//! `ingressLoadBalancerStatusStringer`), `printIngressClass`,
//! `printNetworkPolicy`, `printServiceCIDR` and `printIPAddress`.
//!
//! Invariants: HOSTS lists at most three hosts (`*` when no rule names
//! one), PORTS is `80` or `80, 443` depending only on whether TLS is
//! configured, ADDRESS is never truncated (server-side wide rendering).

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, string, ColumnDefinition};
use super::object::{at, format_label_selector, items, name, opt_str, str_at};
use super::service::load_balancer_addresses;
use super::{age, CellsFn, ColumnsFn, Printer};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, cells): (ColumnsFn, CellsFn) = match kind {
        "Ingress" => (ingress_columns, ingress_cells),
        "IngressClass" => (class_columns, class_cells),
        "NetworkPolicy" => (policy_columns, policy_cells),
        "ServiceCIDR" => (cidr_columns, cidr_cells),
        "IPAddress" => (ip_columns, ip_cells),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

fn ingress_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Class", "The name of the IngressClass resource that should be used for additional configuration"),
        string("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
        string("Address", "Address is a list containing ingress points for the load-balancer"),
        string("Ports", "Ports of TLS configurations that open"),
        column::age(),
    ]
}

/// `formatHosts`: rules without a host are skipped but still counted in
/// the `+ N more...` suffix, exactly as upstream.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", rules.len() - MAX)
    } else {
        joined
    }
}

fn ingress_cells(ing: &Value, now: Timestamp) -> Vec<Value> {
    let ports = if items(ing, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ing).into(),
        opt_str(ing, &["spec", "ingressClassName"])
            .unwrap_or("<none>")
            .into(),
        format_hosts(items(ing, &["spec", "rules"])).into(),
        load_balancer_addresses(at(ing, &["status", "loadBalancer"])).into(),
        ports.into(),
        age::of_object(ing, now).into(),
    ]
}

fn class_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Controller",
            "Controller that is responsible for handling this class",
        ),
        string(
            "Parameters",
            "A reference to a resource with additional parameters",
        ),
        column::age(),
    ]
}

fn class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    let parameters = match at(class, &["spec", "parameters"]).filter(|p| p.is_object()) {
        Some(p) => {
            let mut s = str_at(p, &["kind"]).to_string();
            if let Some(group) = opt_str(p, &["apiGroup"]) {
                s.push('.');
                s.push_str(group);
            }
            format!("{s}/{}", str_at(p, &["name"]))
        }
        None => "<none>".to_string(),
    };
    vec![
        name(class).into(),
        str_at(class, &["spec", "controller"]).into(),
        parameters.into(),
        age::of_object(class, now).into(),
    ]
}

fn policy_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("Pod-Selector", "Selects the pods to which this NetworkPolicy object applies.  The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods.  In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace."),
        column::age(),
    ]
}

fn policy_cells(np: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(np).into(),
        format_label_selector(at(np, &["spec", "podSelector"])).into(),
        age::of_object(np, now).into(),
    ]
}

fn cidr_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("CIDRs", "CIDRs defines the IP blocks in CIDR notation (e.g. \"192.168.0.0/24\" or \"2001:db8::/64\") from which to assign service cluster IPs. Max of two CIDRs is allowed, one of each IP family. This field is immutable."),
        column::age(),
    ]
}

fn cidr_cells(cidr: &Value, now: Timestamp) -> Vec<Value> {
    let cidrs: Vec<&str> = items(cidr, &["spec", "cidrs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    vec![
        name(cidr).into(),
        cidrs.join(",").into(),
        age::of_object(cidr, now).into(),
    ]
}

fn ip_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string("ParentRef", "ParentRef references the resource that an IPAddress is attached to. An IPAddress must reference a parent object."),
    ]
}

/// Upstream's IPAddress columns stop at ParentRef but its rows also carry
/// the age; Table clients ignore surplus cells, so the age is dropped here
/// to keep cells and columns aligned.
fn ip_cells(ip: &Value, _now: Timestamp) -> Vec<Value> {
    let parent = match at(ip, &["spec", "parentRef"]).filter(|p| p.is_object()) {
        Some(p) => {
            let group = str_at(p, &["group"]);
            let resource = str_at(p, &["resource"]);
            let group_resource = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            let mut s = group_resource.to_lowercase();
            let namespace = str_at(p, &["namespace"]);
            if !namespace.is_empty() {
                s.push('/');
                s.push_str(namespace);
            }
            format!("{s}/{}", str_at(p, &["name"]))
        }
        None => "<none>".to_string(),
    };
    vec![name(ip).into(), parent.into()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn ingress_with_tls_and_address() {
        let ing = json!({"metadata": {"name": "shop", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"ingressClassName": "nginx",
                "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
                "rules": [{"host": "shop.example.com"}, {"host": "api.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}});
        assert_eq!(
            ingress_cells(&ing, now()),
            vec![
                json!("shop"),
                json!("nginx"),
                json!("shop.example.com,api.example.com"),
                json!("198.51.100.7"),
                json!("80, 443"),
                json!("60s"),
            ]
        );
    }

    #[test]
    fn ingress_hosts_edge_cases() {
        assert_eq!(format_hosts(&[]), "*");
        assert_eq!(format_hosts(&[json!({}), json!({"http": {}})]), "*");
        let rules: Vec<Value> = ["a", "", "b", "c", "d"]
            .iter()
            .map(|h| json!({"host": h}))
            .collect();
        assert_eq!(format_hosts(&rules), "a,b,c + 2 more...");
        let c = ingress_cells(&json!({}), now());
        assert_eq!(
            c[1..5],
            [json!("<none>"), json!("*"), json!(""), json!("80")]
        );
    }

    #[test]
    fn ingress_class_network_policy_cidr_ip() {
        let class = json!({"spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
        assert_eq!(
            class_cells(&class, now())[1..3],
            [
                json!("k8s.io/ingress-nginx"),
                json!("IngressParameters.k8s.example.com/external-lb")
            ]
        );
        let np = json!({"spec": {"podSelector": {}}});
        assert_eq!(policy_cells(&np, now())[1], json!("<none>"));
        let np = json!({"spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
        assert_eq!(policy_cells(&np, now())[1], json!("role=db"));
        let cidr = json!({"spec": {"cidrs": ["10.96.0.0/12", "fd00::/108"]}});
        assert_eq!(
            cidr_cells(&cidr, now())[1],
            json!("10.96.0.0/12,fd00::/108")
        );
        let ip = json!({"metadata": {"name": "10.96.0.1"}, "spec": {"parentRef":
            {"group": "", "resource": "services", "namespace": "default", "name": "kubernetes"}}});
        assert_eq!(
            ip_cells(&ip, now()),
            vec![json!("10.96.0.1"), json!("services/default/kubernetes")]
        );
    }
}
