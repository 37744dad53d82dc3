//! Version-neutral model of the REST paths the API server exposes for a
//! resource list, laid out as upstream's `apiserver/pkg/endpoints/installer.go`
//! registers them (and as kube-openapi names them).
//!
//! Per resource `R` of kind `K` in `<prefix>` (`/api/v1` or `/apis/G/V`):
//! * `<prefix>/R` (cluster-scoped) or `<prefix>/namespaces/{namespace}/R`:
//!   `get` (list), `post` (create), `delete` (deletecollection);
//! * `.../R/{name}`: `get`, `put` (update), `patch`, `delete`;
//! * `.../R/{name}/<subresource>`;
//! * `<prefix>/R` for namespaced resources: list across namespaces;
//! * the deprecated `<prefix>/watch/...` paths for the `watch` verb.
//!
//! Every operation carries `x-kubernetes-action` and a *single*
//! `x-kubernetes-group-version-kind` object, the kind of the object the
//! operation is about (not its `*List`) — `kubectl explain` finds a resource's
//! kind through exactly these. Every POST/PUT/PATCH declares the
//! `fieldValidation` query parameter: kubectl's QueryParamVerifier only uses
//! server-side field validation when the PATCH operation of the kind lists it.

use super::builtin;
use super::dialect::V2_REF_PREFIX;
use super::ResourceSpec;

/// Group/version/kind triple as published in extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Put,
    Post,
    Delete,
    Patch,
}

impl Method {
    pub fn key(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Post => "post",
            Method::Delete => "delete",
            Method::Patch => "patch",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ParamIn {
    Path,
    Query,
}

/// A path or query parameter; all of ours are scalars.
#[derive(Clone, Debug)]
pub(super) struct Param {
    pub name: &'static str,
    pub location: ParamIn,
    pub description: String,
    pub ty: &'static str,
    pub required: bool,
}

/// What an operation returns with its success codes.
#[derive(Clone, Debug)]
pub(super) enum Payload {
    /// A definition, by name.
    Definition(String),
    /// Free text (logs, streams of connect subresources).
    Text,
}

impl Payload {
    pub fn schema(&self) -> serde_json::Value {
        match self {
            Payload::Definition(name) => {
                serde_json::json!({ "$ref": format!("{V2_REF_PREFIX}{name}") })
            }
            Payload::Text => serde_json::json!({ "type": "string" }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyKind {
    /// A full object (`*/*` in upstream's request content).
    Object,
    /// A patch document, one of the patch media types.
    Patch,
}

#[derive(Clone, Debug)]
pub(super) struct Operation {
    pub method: Method,
    pub id: String,
    pub description: String,
    pub action: &'static str,
    pub gvk: Gvk,
    pub params: Vec<Param>,
    pub body: Option<(BodyKind, String)>,
    pub response: Payload,
    pub success_codes: &'static [u16],
    pub watch: bool,
    /// Upstream's tag, e.g. `apps_v1`.
    pub tag: String,
}

#[derive(Clone, Debug)]
pub(super) struct PathItem {
    pub path: String,
    pub params: Vec<Param>,
    pub operations: Vec<Operation>,
}

/// `api/v1` or `apis/<group>/<version>`: the key of the v3 index.
pub(super) fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Upstream's tag for a group version, e.g. `apps_v1`, `core_v1`,
/// `rbacAuthorization_v1`.
pub(super) fn tag(group: &str, version: &str) -> String {
    let g = if group.is_empty() {
        "core".to_owned()
    } else {
        lower_camel(&group_words(group))
    };
    format!("{g}_{version}")
}

/// Words of a group as kube-openapi's operation-ID namer sees it: the
/// `.k8s.io` suffix is dropped, dots separate words.
fn group_words(group: &str) -> Vec<String> {
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    trimmed
        .split(['.', '-'])
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn lower_camel(words: &[String]) -> String {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| if i == 0 { w.clone() } else { upper_first(w) })
        .collect()
}

/// `AppsV1`, `CoreV1`, `RbacAuthorizationV1`: the group-version part of
/// upstream operation IDs.
fn op_gv(group: &str, version: &str) -> String {
    let g = if group.is_empty() {
        "Core".to_owned()
    } else {
        group_words(group).iter().map(|w| upper_first(w)).collect()
    };
    format!("{g}{}", upper_first(version))
}

fn param(name: &'static str, location: ParamIn, ty: &'static str, description: &str) -> Param {
    Param {
        name,
        location,
        description: description.to_owned(),
        ty,
        required: location == ParamIn::Path,
    }
}

fn query(name: &'static str, ty: &'static str, description: &str) -> Param {
    param(name, ParamIn::Query, ty, description)
}

fn pretty() -> Param {
    query("pretty", "string", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).")
}

fn namespace_param() -> Param {
    param(
        "namespace",
        ParamIn::Path,
        "string",
        "object name and auth scope, such as for teams and projects",
    )
}

fn name_param(kind: &str) -> Param {
    param(
        "name",
        ParamIn::Path,
        "string",
        &format!("name of the {kind}"),
    )
}

fn list_params() -> Vec<Param> {
    vec![
        query("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag."),
        query("continue", "string", "The continue option should be set when retrieving more results from the server, with the value of the continue token returned by the previous list call."),
        query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        query("limit", "integer", "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata."),
        query("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
        query("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
        query("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection."),
        query("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
        query("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."),
    ]
}

const FIELD_VALIDATION: &str = "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict.";

fn write_params(patch: bool) -> Vec<Param> {
    let mut params = vec![
        query("dryRun", "string", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
        query("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes."),
        query("fieldValidation", "string", FIELD_VALIDATION),
    ];
    if patch {
        params.push(query("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests."));
    }
    params
}

fn delete_params(collection: bool) -> Vec<Param> {
    let mut params = vec![
        query("dryRun", "string", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately."),
        query("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error."),
        query("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7."),
        query("propagationPolicy", "string", "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background', 'Foreground'."),
    ];
    if collection {
        params.extend(
            list_params()
                .into_iter()
                .filter(|p| !matches!(p.name, "allowWatchBookmarks" | "watch")),
        );
        params.sort_by_key(|p| p.name);
    }
    params
}

/// Everything the path builder needs to know about one resource.
pub(super) struct Resolved<'a> {
    pub spec: &'a ResourceSpec,
    /// Definition name of the resource's kind.
    pub definition: String,
    /// Definition name of its list kind, when it has one.
    pub list_definition: Option<String>,
}

/// How a subresource behaves: which methods it has, what it carries, and
/// which kind its operations are tagged with.
struct Subresource {
    methods: &'static [(Method, &'static str)],
    /// (group, version, kind) of the payload; `None` means the parent kind.
    payload_kind: Option<(&'static str, &'static str, &'static str)>,
    text: bool,
}

const GET_PUT_PATCH: &[(Method, &str)] = &[
    (Method::Get, "get"),
    (Method::Put, "put"),
    (Method::Patch, "patch"),
];
const CONNECT: &[(Method, &str)] = &[(Method::Get, "connect"), (Method::Post, "connect")];

fn subresource(parent_kind: &str, name: &str) -> Subresource {
    let parent = Subresource {
        methods: GET_PUT_PATCH,
        payload_kind: None,
        text: false,
    };
    let connect_kind = match parent_kind {
        "Pod" => Some(match name {
            "exec" => "PodExecOptions",
            "attach" => "PodAttachOptions",
            "portforward" => "PodPortForwardOptions",
            _ => "PodProxyOptions",
        }),
        "Service" => Some("ServiceProxyOptions"),
        "Node" => Some("NodeProxyOptions"),
        _ => None,
    };
    match name {
        "scale" => Subresource {
            payload_kind: Some(("autoscaling", "v1", "Scale")),
            ..parent
        },
        "eviction" => Subresource {
            methods: &[(Method::Post, "post")],
            payload_kind: Some(("policy", "v1", "Eviction")),
            text: false,
        },
        "binding" => Subresource {
            methods: &[(Method::Post, "post")],
            payload_kind: Some(("", "v1", "Binding")),
            text: false,
        },
        "token" => Subresource {
            methods: &[(Method::Post, "post")],
            payload_kind: Some(("authentication.k8s.io", "v1", "TokenRequest")),
            text: false,
        },
        "finalize" => Subresource {
            methods: &[(Method::Put, "put")],
            ..parent
        },
        "log" => Subresource {
            methods: &[(Method::Get, "get")],
            payload_kind: None,
            text: true,
        },
        "exec" | "attach" | "portforward" | "proxy" => Subresource {
            methods: CONNECT,
            payload_kind: connect_kind.map(|k| ("", "v1", k)),
            text: true,
        },
        _ => parent,
    }
}

/// Every path item for one group version, sorted by path.
pub(super) fn group_version_paths(
    group: &str,
    version: &str,
    resources: &[Resolved<'_>],
) -> Vec<PathItem> {
    let prefix = format!("/{}", gv_path(group, version));
    let ogv = op_gv(group, version);
    let mut items = vec![PathItem {
        path: format!("{prefix}/"),
        params: vec![],
        operations: vec![Operation {
            method: Method::Get,
            id: format!("get{ogv}APIResources"),
            description: "get available resources".into(),
            action: "",
            gvk: Gvk {
                group: String::new(),
                version: String::new(),
                kind: String::new(),
            },
            params: vec![],
            body: None,
            response: Payload::Definition(builtin::API_RESOURCE_LIST.into()),
            success_codes: &[200],
            watch: false,
            tag: String::new(),
        }],
    }];
    for r in resources {
        resource_paths(&prefix, &ogv, r, &mut items);
    }
    let t = tag(group, version);
    for op in items.iter_mut().flat_map(|i| i.operations.iter_mut()) {
        op.tag = t.clone();
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    items.dedup_by(|a, b| a.path == b.path);
    items
}

fn has(spec: &ResourceSpec, verb: &str) -> bool {
    spec.verbs.iter().any(|v| v == verb)
}

fn resource_paths(prefix: &str, ogv: &str, r: &Resolved<'_>, items: &mut Vec<PathItem>) {
    let spec = r.spec;
    let kind = spec.kind.as_str();
    let gvk = Gvk {
        group: spec.group.clone(),
        version: spec.version.clone(),
        kind: kind.to_owned(),
    };
    let scoped = if spec.namespaced { "Namespaced" } else { "" };
    let ns_prefix = if spec.namespaced {
        format!("{prefix}/namespaces/{{namespace}}")
    } else {
        prefix.to_owned()
    };
    let scope_params = |extra: Vec<Param>| {
        let mut params = extra;
        if spec.namespaced {
            params.push(namespace_param());
        }
        params.push(pretty());
        params
    };
    let object = Payload::Definition(r.definition.clone());
    let op = |method, id: String, description: String, action, params, body, response, codes| {
        Operation {
            method,
            id,
            description,
            action,
            gvk: gvk.clone(),
            params,
            body,
            response,
            success_codes: codes,
            watch: false,
            tag: String::new(),
        }
    };

    // Collection.
    let mut collection = Vec::new();
    if let (true, Some(list)) = (has(spec, "list"), &r.list_definition) {
        collection.push(op(
            Method::Get,
            format!("list{ogv}{scoped}{kind}"),
            format!("list or watch objects of kind {kind}"),
            "list",
            list_params(),
            None,
            Payload::Definition(list.clone()),
            &[200],
        ));
        if spec.namespaced {
            let all = op(
                Method::Get,
                format!("list{ogv}{kind}ForAllNamespaces"),
                format!("list or watch objects of kind {kind}"),
                "list",
                vec![],
                None,
                Payload::Definition(list.clone()),
                &[200],
            );
            items.push(PathItem {
                path: format!("{prefix}/{}", spec.plural),
                params: {
                    let mut p = list_params();
                    p.push(pretty());
                    p
                },
                operations: vec![all],
            });
        }
    }
    if has(spec, "create") {
        collection.push(op(
            Method::Post,
            format!("create{ogv}{scoped}{kind}"),
            format!("create a {kind}"),
            "post",
            write_params(false),
            Some((BodyKind::Object, r.definition.clone())),
            object.clone(),
            &[200, 201, 202],
        ));
    }
    if has(spec, "deletecollection") {
        collection.push(op(
            Method::Delete,
            format!("delete{ogv}Collection{scoped}{kind}"),
            format!("delete collection of {kind}"),
            "deletecollection",
            delete_params(true),
            Some((BodyKind::Object, builtin::DELETE_OPTIONS.into())),
            Payload::Definition(builtin::STATUS.into()),
            &[200],
        ));
    }
    if !collection.is_empty() {
        items.push(PathItem {
            path: format!("{ns_prefix}/{}", spec.plural),
            params: scope_params(vec![]),
            operations: collection,
        });
    }

    // Single object.
    let mut single = Vec::new();
    if has(spec, "get") {
        single.push(op(
            Method::Get,
            format!("read{ogv}{scoped}{kind}"),
            format!("read the specified {kind}"),
            "get",
            vec![],
            None,
            object.clone(),
            &[200],
        ));
    }
    if has(spec, "update") {
        single.push(op(
            Method::Put,
            format!("replace{ogv}{scoped}{kind}"),
            format!("replace the specified {kind}"),
            "put",
            write_params(false),
            Some((BodyKind::Object, r.definition.clone())),
            object.clone(),
            &[200, 201],
        ));
    }
    if has(spec, "patch") {
        single.push(op(
            Method::Patch,
            format!("patch{ogv}{scoped}{kind}"),
            format!("partially update the specified {kind}"),
            "patch",
            write_params(true),
            Some((BodyKind::Patch, builtin::PATCH.into())),
            object.clone(),
            &[200, 201],
        ));
    }
    if has(spec, "delete") {
        single.push(op(
            Method::Delete,
            format!("delete{ogv}{scoped}{kind}"),
            format!("delete a {kind}"),
            "delete",
            delete_params(false),
            Some((BodyKind::Object, builtin::DELETE_OPTIONS.into())),
            Payload::Definition(builtin::STATUS.into()),
            &[200, 202],
        ));
    }
    let name_path = format!("{ns_prefix}/{}/{{name}}", spec.plural);
    if !single.is_empty() {
        items.push(PathItem {
            path: name_path.clone(),
            params: scope_params(vec![name_param(kind)]),
            operations: single,
        });
    }

    // Subresources.
    for sub in &spec.subresources {
        let info = subresource(kind, sub);
        let sub_gvk = match info.payload_kind {
            Some((g, v, k)) => Gvk {
                group: g.into(),
                version: v.into(),
                kind: k.into(),
            },
            None => gvk.clone(),
        };
        let payload_definition = match info.payload_kind {
            Some((g, v, k)) => builtin::builtins()
                .definition_name(g, v, k)
                .map(str::to_owned),
            None => Some(r.definition.clone()),
        };
        let payload = match (&payload_definition, info.text) {
            (_, true) => Payload::Text,
            (Some(d), false) => Payload::Definition(d.clone()),
            (None, false) => continue,
        };
        let sub_camel = upper_first(sub);
        let mut ops = Vec::new();
        for (method, action) in info.methods {
            let (verb, params, body, codes): (String, _, _, &'static [u16]) =
                match (method, *action) {
                    (Method::Get, "connect") => (format!("connect{ogv}Get"), vec![], None, &[200]),
                    (Method::Post, "connect") => {
                        (format!("connect{ogv}Post"), vec![], None, &[200])
                    }
                    (Method::Get, _) => (format!("read{ogv}"), vec![], None, &[200]),
                    (Method::Put, _) => (
                        format!("replace{ogv}"),
                        write_params(false),
                        payload_definition.clone().map(|d| (BodyKind::Object, d)),
                        &[200, 201],
                    ),
                    (Method::Patch, _) => (
                        format!("patch{ogv}"),
                        write_params(true),
                        Some((BodyKind::Patch, builtin::PATCH.to_owned())),
                        &[200, 201],
                    ),
                    (Method::Post, _) => (
                        format!("create{ogv}"),
                        write_params(false),
                        payload_definition.clone().map(|d| (BodyKind::Object, d)),
                        &[200, 201, 202],
                    ),
                    (Method::Delete, _) => (format!("delete{ogv}"), vec![], None, &[200]),
                };
            ops.push(Operation {
                method: *method,
                id: format!("{verb}{scoped}{kind}{sub_camel}"),
                description: format!(
                    "{} {sub} of the specified {kind}",
                    method_verb(*method, action)
                ),
                action,
                gvk: sub_gvk.clone(),
                params,
                body,
                response: payload.clone(),
                success_codes: codes,
                watch: false,
                tag: String::new(),
            });
        }
        items.push(PathItem {
            path: format!("{name_path}/{sub}"),
            params: scope_params(vec![name_param(kind)]),
            operations: ops,
        });
    }

    // Deprecated watch paths, still published upstream.
    if has(spec, "watch") {
        let watch_op = |id: String, action| Operation {
            method: Method::Get,
            id,
            description: format!("watch changes to objects of kind {kind}"),
            action,
            gvk: gvk.clone(),
            params: vec![],
            body: None,
            response: Payload::Definition(builtin::WATCH_EVENT.into()),
            success_codes: &[200],
            watch: true,
            tag: String::new(),
        };
        let watch_prefix = if spec.namespaced {
            format!("{prefix}/watch/namespaces/{{namespace}}")
        } else {
            format!("{prefix}/watch")
        };
        let with_list = |mut extra: Vec<Param>| {
            extra.extend(list_params());
            extra
        };
        items.push(PathItem {
            path: format!("{watch_prefix}/{}", spec.plural),
            params: scope_params(with_list(vec![])),
            operations: vec![watch_op(
                format!("watch{ogv}{scoped}{kind}List"),
                "watchlist",
            )],
        });
        items.push(PathItem {
            path: format!("{watch_prefix}/{}/{{name}}", spec.plural),
            params: scope_params(with_list(vec![name_param(kind)])),
            operations: vec![watch_op(format!("watch{ogv}{scoped}{kind}"), "watch")],
        });
        if spec.namespaced {
            let mut params = list_params();
            params.push(pretty());
            items.push(PathItem {
                path: format!("{prefix}/watch/{}", spec.plural),
                params,
                operations: vec![watch_op(
                    format!("watch{ogv}{kind}ListForAllNamespaces"),
                    "watchlist",
                )],
            });
        }
    }
}

fn method_verb(method: Method, action: &str) -> &'static str {
    match (method, action) {
        (_, "connect") => "connect to",
        (Method::Get, _) => "read",
        (Method::Put, _) => "replace",
        (Method::Patch, _) => "partially update",
        (Method::Post, _) => "create",
        (Method::Delete, _) => "delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream() {
        assert_eq!(op_gv("", "v1"), "CoreV1");
        assert_eq!(
            op_gv("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(
            op_gv("stable.example.com", "v1beta1"),
            "StableExampleComV1beta1"
        );
        assert_eq!(tag("apps", "v1"), "apps_v1");
        assert_eq!(tag("", "v1"), "core_v1");
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(gv_path("", "v1"), "api/v1");
        assert_eq!(gv_path("apps", "v1"), "apis/apps/v1");
    }
}
