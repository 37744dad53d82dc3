//! `meta.k8s.io/v1` `TableColumnDefinition` and the columns every printer shares.
//!
//! Invariants: every column list produced by this module starts with a
//! column of `format: "name"` (upstream's convention that clients use to
//! find the object's name), except core `Event`, where upstream itself puts
//! `Name` last. Descriptions of NAME and AGE are upstream's `ObjectMeta`
//! swagger docs verbatim.

use serde::Serialize;

/// `metav1.ObjectMeta{}.SwaggerDoc()["name"]`.
pub(super) const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]`.
pub(super) const CREATION_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

pub(super) const CONTAINERS_DESCRIPTION: &str = "Names of each container in the template.";
pub(super) const IMAGES_DESCRIPTION: &str = "Images referenced by each container in the template.";

/// One column of a Table. Serialises exactly as upstream: all five fields
/// are always present (`format` is `""` when unset, `priority` is `0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnDefinition {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date` (OpenAPI types).
    #[serde(rename = "type")]
    pub type_: String,
    /// `name` for the column holding the object name; otherwise usually empty.
    pub format: String,
    pub description: String,
    /// `0` is shown by `kubectl get`; higher only with `-o wide`.
    pub priority: i32,
}

impl ColumnDefinition {
    pub fn new(name: &str, type_: &str, description: &str) -> Self {
        ColumnDefinition {
            name: name.to_string(),
            type_: type_.to_string(),
            format: String::new(),
            description: description.to_string(),
            priority: 0,
        }
    }

    /// Marks the column as `-o wide` only (upstream `Priority: 1`).
    pub(super) fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }

    pub(super) fn format(mut self, format: &str) -> Self {
        self.format = format.to_string();
        self
    }
}

pub(super) fn string(name: &str, description: &str) -> ColumnDefinition {
    ColumnDefinition::new(name, "string", description)
}

pub(super) fn integer(name: &str, description: &str) -> ColumnDefinition {
    ColumnDefinition::new(name, "integer", description)
}

pub(super) fn boolean(name: &str, description: &str) -> ColumnDefinition {
    ColumnDefinition::new(name, "boolean", description)
}

/// The `Name` column every printer starts with.
pub(super) fn name() -> ColumnDefinition {
    string("Name", NAME_DESCRIPTION).format("name")
}

/// The `Age` column (a string cell such as `5m`).
pub(super) fn age() -> ColumnDefinition {
    string("Age", CREATION_DESCRIPTION)
}

/// Wide `Containers` and `Images` columns of workload printers.
pub(super) fn containers_images() -> [ColumnDefinition; 2] {
    [
        string("Containers", CONTAINERS_DESCRIPTION).wide(),
        string("Images", IMAGES_DESCRIPTION).wide(),
    ]
}
