//! The resources this server serves right now: the built-in table plus one entry per served
//! version of every established CustomResourceDefinition, rebuilt whenever a CRD changes.
//!
//! Storage keys do not depend on the version (`/registry/<group>/<plural>/...`), so every
//! served version of a custom resource reads and writes the same objects (the `None`
//! conversion strategy: only `apiVersion` changes).

use std::sync::RwLock;

use serde_json::Value;

use crate::api::resources::{builtin, CRUD};
use crate::api::ResourceInfo;

/// What the server needs to know about one served version of a custom resource.
#[derive(Debug, Clone)]
pub struct CustomVersion {
    pub info: ResourceInfo,
    /// The version's `openAPIV3Schema`, if any.
    pub schema: Option<Value>,
    /// The same, typed, parsed once when the CRD changes.
    pub typed_schema: Option<
        std::sync::Arc<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
        >,
    >,
    /// `subresources.scale`: (specReplicasPath, statusReplicasPath, labelSelectorPath).
    pub scale: Option<(String, String, Option<String>)>,
    pub printer_columns: Vec<Value>,
}

#[derive(Default)]
pub struct Registry {
    custom: RwLock<Vec<CustomVersion>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn custom(&self) -> std::sync::RwLockReadGuard<'_, Vec<CustomVersion>> {
        self.custom.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every served resource: built-ins first, then custom resources.
    pub fn all(&self) -> Vec<ResourceInfo> {
        let mut out = builtin().to_vec();
        out.extend(self.custom().iter().map(|c| c.info.clone()));
        out
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        if let Some(r) = builtin()
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
        {
            return Some(r.clone());
        }
        self.custom()
            .iter()
            .find(|c| c.info.group == group && c.info.version == version && c.info.plural == plural)
            .map(|c| c.info.clone())
    }

    /// Whether an in-process resource serves `group` (at `version`, when given).
    pub fn serves(&self, group: &str, version: Option<&str>) -> bool {
        let matches = |r: &ResourceInfo| r.group == group && version.is_none_or(|v| r.version == v);
        builtin().iter().any(matches) || self.custom().iter().any(|c| matches(&c.info))
    }

    pub fn custom_version(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<CustomVersion> {
        self.custom()
            .iter()
            .find(|c| c.info.group == group && c.info.version == version && c.info.plural == plural)
            .cloned()
    }

    /// Every custom version (for discovery, OpenAPI and tables).
    pub fn custom_versions(&self) -> Vec<CustomVersion> {
        self.custom().clone()
    }

    /// Replace the custom resources with those of the given CRD objects (only established
    /// ones with accepted names are served, as upstream).
    pub fn set_crds(&self, crds: &[Value]) {
        let mut out = Vec::new();
        for crd in crds {
            out.extend(versions_of(crd));
        }
        *self.custom.write().unwrap_or_else(|p| p.into_inner()) = out;
    }
}

fn established(crd: &Value) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The served versions of one CRD object.
pub fn versions_of(crd: &Value) -> Vec<CustomVersion> {
    if !established(crd) || crd["metadata"]["deletionTimestamp"].is_string() {
        return Vec::new();
    }
    let spec = &crd["spec"];
    let names = &spec["names"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        names["plural"].as_str(),
        names["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] != Value::Bool(true) {
            continue;
        }
        let Some(version) = v["name"].as_str() else {
            continue;
        };
        let subs = &v["subresources"];
        let mut subresources = Vec::new();
        if subs["status"].is_object() {
            subresources.push("status".to_string());
        }
        let scale = subs["scale"].as_object().map(|s| {
            subresources.push("scale".to_string());
            (
                s.get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas")
                    .to_string(),
                s.get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas")
                    .to_string(),
                s.get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        });
        let mut info = ResourceInfo::owned(
            group,
            version,
            kind,
            plural,
            &singular,
            namespaced,
            CRUD,
            &[],
            &[],
            &[],
        );
        info.list_kind = names["listKind"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{kind}List"));
        info.short_names = strings(&names["shortNames"]);
        info.categories = strings(&names["categories"]);
        info.subresources = subresources;
        let schema = v["schema"]["openAPIV3Schema"]
            .as_object()
            .map(|o| Value::Object(o.clone()));
        out.push(CustomVersion {
            info,
            typed_schema: schema
                .as_ref()
                .and_then(crate::apiserver::strategy::custom::typed_schema)
                .map(std::sync::Arc::new),
            schema,
            scale,
            printer_columns: v["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        });
    }
    out
}
