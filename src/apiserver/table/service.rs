//! Printers for how traffic reaches pods: core/v1 `Service` and `Endpoints`,
//! discovery.k8s.io/v1 `EndpointSlice`.
//!
//! Copies upstream `printService` (with `getServiceExternalIP` and
//! `makePortString`), `printEndpoints` (`formatEndpoints`) and
//! `printEndpointSlice` (`formatDiscoveryPorts`/`formatDiscoveryEndpoints`).
//!
//! Invariants: lists are cut to three entries plus `+ N more...` exactly as
//! upstream; the load-balancer address is never truncated because the
//! server renders the wide form (the 16-char clipping upstream applies only
//! to client-side non-wide printing).

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::column::{self, string, ColumnDefinition};
use super::object::{as_int, at, format_labels, int_at, items, name, str_at};
use super::{age, CellsFn, ColumnsFn, Printer};

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let (columns, cells): (ColumnsFn, CellsFn) = match (group, kind) {
        ("", "Service") => (service_columns, service_cells),
        ("", "Endpoints") => (endpoints_columns, endpoints_cells),
        ("discovery.k8s.io", "EndpointSlice") => (slice_columns, slice_cells),
        _ => return None,
    };
    Some(Printer { columns, cells })
}

fn service_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Type",
            "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
        ),
        string(
            "Cluster-IP",
            "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
        ),
        string(
            "External-IP",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
        ),
        string(
            "Port(s)",
            "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
        ),
        column::age(),
        string(
            "Selector",
            "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
        )
        .wide(),
    ]
}

/// Service type after API defaulting (`ClusterIP` when unset).
fn service_type(svc: &Value) -> &str {
    match str_at(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    }
}

fn strings<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a str> {
    items(v, path).iter().filter_map(Value::as_str).collect()
}

/// `loadBalancerStatusStringer` (wide form): distinct IPs or hostnames,
/// sorted, comma-joined. Shared with Ingress.
pub(super) fn load_balancer_addresses(status: Option<&Value>) -> String {
    let ingress = status.map_or(&[][..], |s| items(s, &["ingress"]));
    let set: BTreeSet<&str> = ingress
        .iter()
        .filter_map(|i| {
            [str_at(i, &["ip"]), str_at(i, &["hostname"])]
                .into_iter()
                .find(|s| !s.is_empty())
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// `getServiceExternalIP`.
fn external_ip(svc: &Value) -> String {
    let external_ips = strings(svc, &["spec", "externalIPs"]);
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_addresses(at(svc, &["status", "loadBalancer"]));
            if !external_ips.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(','));
                }
                all.extend(external_ips);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `makePortString`: `port[:nodePort]/protocol`, protocol defaulting to TCP.
fn ports(svc: &Value) -> String {
    let pieces: Vec<String> = items(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = match str_at(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            match int_at(p, &["nodePort"]) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    if pieces.is_empty() {
        "<none>".to_string()
    } else {
        pieces.join(",")
    }
}

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    // v1→internal conversion fills clusterIPs from the legacy clusterIP.
    let cluster_ip = strings(svc, &["spec", "clusterIPs"])
        .first()
        .copied()
        .or_else(|| Some(str_at(svc, &["spec", "clusterIP"])).filter(|s| !s.is_empty()))
        .unwrap_or("<none>");
    vec![
        name(svc).into(),
        service_type(svc).into(),
        cluster_ip.into(),
        external_ip(svc).into(),
        ports(svc).into(),
        age::of_object(svc, now).into(),
        format_labels(at(svc, &["spec", "selector"])).into(),
    ]
}

fn endpoints_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "Endpoints",
            "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
        ),
        column::age(),
    ]
}

/// `net.JoinHostPort`: IPv6 literals get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `formatEndpoints(endpoints, nil)`: ready addresses only, first three.
fn format_endpoints(ep: &Value) -> String {
    let subsets = items(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = items(ss, &["addresses"]);
        let ports = items(ss, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(addr, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(
                    str_at(addr, &["ip"]),
                    int_at(port, &["port"]),
                ));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoints_cells(ep: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(ep).into(),
        format_endpoints(ep).into(),
        age::of_object(ep, now).into(),
    ]
}

fn slice_columns() -> Vec<ColumnDefinition> {
    vec![
        column::name(),
        string(
            "AddressType",
            "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.",
        ),
        string(
            "Ports",
            "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.",
        ),
        string(
            "Endpoints",
            "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
        ),
        column::age(),
    ]
}

/// `listWithMoreString`: first three, `+ N more...`, `<unset>` when empty.
pub(super) fn list_with_more(all: Vec<String>) -> String {
    const MAX: usize = 3;
    let count = all.len();
    let joined = all.into_iter().take(MAX).collect::<Vec<_>>().join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}

fn slice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = items(slice, &["ports"])
        .iter()
        .map(|p| match (p.get("port").and_then(as_int), p.get("name")) {
            (Some(port), _) => port.to_string(),
            (None, Some(Value::String(name))) => name.clone(),
            (None, _) => "*".to_string(),
        })
        .collect();
    let endpoints: Vec<String> = items(slice, &["endpoints"])
        .iter()
        .flat_map(|e| items(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        name(slice).into(),
        str_at(slice, &["addressType"]).into(),
        list_with_more(ports).into(),
        list_with_more(endpoints).into(),
        age::of_object(slice, now).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn load_balancer_service() {
        let svc = json!({
            "metadata": {"name": "frontend", "creationTimestamp": "2024-04-28T12:00:00Z"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.12.34",
                "clusterIPs": ["10.96.12.34"],
                "ports": [{"name": "http", "port": 80, "nodePort": 31380, "protocol": "TCP"},
                          {"name": "https", "port": 443, "nodePort": 31443, "protocol": "TCP"}],
                "selector": {"app": "frontend", "tier": "web"}},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "203.0.113.10"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.10"}]}}
        });
        assert_eq!(
            service_cells(&svc, now()),
            vec![
                json!("frontend"),
                json!("LoadBalancer"),
                json!("10.96.12.34"),
                json!("203.0.113.10,lb.example.com"),
                json!("80:31380/TCP,443:31443/TCP"),
                json!("3d"),
                json!("app=frontend,tier=web"),
            ]
        );
    }

    #[test]
    fn pending_load_balancer_and_external_ips() {
        let mut svc = json!({"metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "UDP"}]}});
        assert_eq!(service_cells(&svc, now())[3], json!("<pending>"));
        svc["spec"]["externalIPs"] = json!(["198.51.100.1"]);
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}});
        assert_eq!(
            service_cells(&svc, now())[3],
            json!("203.0.113.9,198.51.100.1")
        );
        assert_eq!(service_cells(&svc, now())[4], json!("53/UDP"));
    }

    #[test]
    fn cluster_ip_headless_and_external_name() {
        let headless = json!({"metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}});
        let c = service_cells(&headless, now());
        assert_eq!(c[1], json!("ClusterIP"));
        assert_eq!(c[2], json!("None"));
        assert_eq!(c[3], json!("<none>"));
        assert_eq!(c[4], json!("5432/TCP"));
        assert_eq!(c[6], json!("<none>"));
        let ext = json!({"metadata": {"name": "x"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let c = service_cells(&ext, now());
        assert_eq!(c[2], json!("<none>"));
        assert_eq!(c[3], json!("db.example.com"));
        assert_eq!(c[4], json!("<none>"));
    }

    #[test]
    fn endpoints_list_three_then_more() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
            "ports": [{"port": 8080}, {"port": 9090}]}]});
        assert_eq!(
            format_endpoints(&ep),
            "10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 3 more..."
        );
        let headless = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        assert_eq!(format_endpoints(&headless), "10.0.0.1");
        assert_eq!(format_endpoints(&json!({})), "<none>");
        assert_eq!(format_endpoints(&json!({"subsets": [{}]})), "");
    }

    #[test]
    fn endpoint_slice_ports_and_addresses() {
        let slice = json!({"metadata": {"name": "web-abcde"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "named"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]},
                          {"addresses": ["10.0.0.4"]}]});
        let c = slice_cells(&slice, now());
        assert_eq!(c[1], json!("IPv4"));
        assert_eq!(c[2], json!("80,named,*"));
        assert_eq!(c[3], json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."));
        let empty = slice_cells(&json!({}), now());
        assert_eq!(empty[2], json!("<unset>"));
        assert_eq!(empty[3], json!("<unset>"));
    }
}
