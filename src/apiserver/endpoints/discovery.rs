//! Discovery, as upstream serves it: legacy `/api`, `/apis`, `/apis/<group>`,
//! `/api/v1`, `/apis/<group>/<version>`, and aggregated discovery (`apidiscovery.k8s.io/v2`
//! `APIGroupDiscoveryList` on `/api` and `/apis` when the client asks for it, as kubectl does).
//! Also routes `/openapi/v2` and `/openapi/v3...` to the OpenAPI module.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use crate::api::ResourceInfo;
use crate::apiserver::edge::body::{error_response, json_response, Body};
use crate::apiserver::status::ApiError;
use crate::apiserver::State;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Group names in order of first appearance, with their versions.
fn groups(resources: &[ResourceInfo]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version.clone());
                }
            }
            None => out.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    out
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

fn resource_list(resources: &[ResourceInfo], group: &str, version: &str) -> Option<Value> {
    let mut items = Vec::new();
    for r in resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        items.push(main);
        for sub in &r.subresources {
            let (kind, verbs, group, version) = subresource_shape(r, sub);
            let mut s = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some(g) = group {
                s["group"] = json!(g);
                s["version"] = json!(version);
            }
            items.push(s);
        }
    }
    if items.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}),
    )
}

/// (kind, verbs, response group, response version) of a subresource, as upstream reports them.
fn subresource_shape(
    r: &ResourceInfo,
    sub: &str,
) -> (
    String,
    Vec<&'static str>,
    Option<&'static str>,
    &'static str,
) {
    match sub {
        "status" => (r.kind.clone(), vec!["get", "patch", "update"], None, ""),
        "scale" => (
            "Scale".into(),
            vec!["get", "patch", "update"],
            Some("autoscaling"),
            "v1",
        ),
        "binding" => ("Binding".into(), vec!["create"], None, ""),
        "eviction" => ("Eviction".into(), vec!["create"], Some("policy"), "v1"),
        "token" => (
            "TokenRequest".into(),
            vec!["create"],
            Some("authentication.k8s.io"),
            "v1",
        ),
        "approval" => (r.kind.clone(), vec!["get", "patch", "update"], None, ""),
        "finalize" => (r.kind.clone(), vec!["update"], None, ""),
        "ephemeralcontainers" => (r.kind.clone(), vec!["get", "patch", "update"], None, ""),
        "log" => ("Pod".into(), vec!["get"], None, ""),
        "exec" | "attach" | "portforward" => {
            ("PodExecOptions".into(), vec!["create", "get"], None, "")
        }
        "proxy" => (
            format!("{}ProxyOptions", r.kind),
            vec!["create", "delete", "get", "patch", "update"],
            None,
            "",
        ),
        _ => (r.kind.clone(), vec!["get"], None, ""),
    }
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            let (kind, verbs, group, version) = subresource_shape(r, s);
            json!({
                "subresource": s,
                "responseKind": {
                    "group": group.unwrap_or(&r.group),
                    "version": if group.is_some() { version } else { r.version.as_str() },
                    "kind": kind,
                },
                "verbs": verbs,
            })
        })
        .collect();
    if !subs.is_empty() {
        v["subresources"] = json!(subs);
    }
    v
}

fn aggregated(resources: &[ResourceInfo], core: bool) -> Value {
    let items: Vec<Value> = if core {
        let rs: Vec<Value> = resources
            .iter()
            .filter(|r| r.group.is_empty())
            .map(aggregated_resource)
            .collect();
        vec![
            json!({"metadata": {"creationTimestamp": null}, "versions": [{"version": "v1", "resources": rs, "freshness": "Current"}]}),
        ]
    } else {
        groups(resources)
            .into_iter()
            .map(|(g, versions)| {
                let vs: Vec<Value> = versions
                    .iter()
                    .map(|v| {
                        let rs: Vec<Value> = resources
                            .iter()
                            .filter(|r| r.group == g && &r.version == v)
                            .map(aggregated_resource)
                            .collect();
                        json!({"version": v, "resources": rs, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs})
            })
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: Vec<String> = part
            .split(';')
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        p.first().is_some_and(|m| m == "application/json")
            && p.iter().any(|x| x == "g=apidiscovery.k8s.io")
            && p.iter().any(|x| x == "v=v2")
            && p.iter().any(|x| x == "as=apigroupdiscoverylist")
    })
}

pub fn serve(state: &Arc<State>, path: &str, accept: &str) -> Response<Body> {
    let resources = state.registry.all();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let value = match parts.as_slice() {
        ["api"] | ["apis"] if wants_aggregated(accept) => {
            let mut doc = aggregated(&resources, parts[0] == "api");
            if parts[0] == "apis" {
                // Remote APIServices' groups (upstream's discovery aggregation).
                let remote = state
                    .aggregator
                    .discovery_v2(|g| state.registry.serves(g, None));
                if let Some(items) = doc["items"].as_array_mut() {
                    items.extend(remote);
                }
            }
            let mut resp = json_response(200, &doc);
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(AGGREGATED_V2),
            );
            return resp;
        }
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.advertise.to_string()}],
        })),
        ["apis"] => {
            let mut gs: Vec<Value> = groups(&resources)
                .iter()
                .map(|(g, v)| group_json(g, v))
                .collect();
            gs.extend(state.aggregator.groups(|g| state.registry.serves(g, None)));
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs}))
        }
        ["api", "v1"] => resource_list(&resources, "", "v1"),
        ["apis", group] => groups(&resources)
            .iter()
            .find(|(g, _)| g == group)
            .map(|(g, v)| {
                let mut gj = group_json(g, v);
                gj["kind"] = json!("APIGroup");
                gj["apiVersion"] = json!("v1");
                gj
            })
            .or_else(|| {
                // A group only remote APIServices serve: described from them, as upstream.
                let mut gj = state
                    .aggregator
                    .groups(|g| state.registry.serves(g, None))
                    .into_iter()
                    .find(|g| g["name"] == *group)?;
                gj["kind"] = json!("APIGroup");
                gj["apiVersion"] = json!("v1");
                Some(gj)
            }),
        ["apis", group, version] => resource_list(&resources, group, version),
        _ => None,
    };
    match value {
        Some(v) => json_response(200, &v),
        None => error_response(&ApiError::path_not_found()),
    }
}

/// The inputs the OpenAPI builder needs, from the live registry.
fn openapi_specs(state: &Arc<State>) -> Vec<super::openapi::ResourceSpec> {
    let customs = state.registry.custom_versions();
    state
        .registry
        .all()
        .into_iter()
        .map(|r| {
            let schema = customs
                .iter()
                .find(|c| c.info == r)
                .and_then(|c| c.schema.clone());
            super::openapi::ResourceSpec {
                group: r.group,
                version: r.version,
                kind: r.kind,
                plural: r.plural,
                namespaced: r.namespaced,
                verbs: r.verbs,
                subresources: r.subresources,
                schema,
            }
        })
        .collect()
}

pub fn openapi(state: &Arc<State>, path: &str, accept: &str) -> Response<Body> {
    let specs = openapi_specs(state);
    if path == "/openapi/v2" {
        // kubectl asks for v2 as protobuf only (and validates apply/create with it).
        let accept = (!accept.is_empty()).then_some(accept);
        return match super::openapi::negotiate_v2(accept) {
            Some(super::openapi::V2Format::Json) => json_response(200, &super::openapi::v2(&specs)),
            Some(super::openapi::V2Format::Protobuf) => match super::openapi::v2_protobuf(&specs) {
                Ok(bytes) => {
                    let mut resp =
                        Response::new(crate::apiserver::edge::body::full(bytes.as_ref().clone()));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(super::openapi::V2_PROTOBUF_CONTENT_TYPE),
                    );
                    resp
                }
                Err(e) => error_response(&ApiError::internal(e.to_string())),
            },
            None => error_response(&ApiError::new(
                406,
                "NotAcceptable",
                "only application/json and the gnostic protobuf form of OpenAPI v2 are served",
            )),
        };
    }
    let doc = if path == "/openapi/v3" || path == "/openapi/v3/" {
        Some(super::openapi::v3_index(&specs))
    } else {
        let gv = path.trim_start_matches("/openapi/v3/");
        super::openapi::v3_group_version(&specs, gv)
    };
    match doc {
        Some(d) => json_response(200, &d),
        None => error_response(&ApiError::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_header_selects_aggregated_discovery() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
    }

    #[test]
    fn aggregated_documents_list_groups_and_subresources() {
        let rs = crate::api::resources::builtin();
        let apis = aggregated(rs, false);
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["shortNames"][0], "deploy");
        assert!(deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subresource"] == "scale" && s["responseKind"]["kind"] == "Scale"));
        let core = aggregated(rs, true);
        assert!(core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resource"] == "pods" && r["categories"][0] == "all"));
    }
}
