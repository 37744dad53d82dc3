//! The one error type of the protobuf module.
//!
//! Every failure to turn a request body into JSON ends here; nothing in the
//! module panics on input. Messages name the offending message/field so an
//! apiserver can hand them back in a `Status` (upstream answers such bodies
//! with 400 BadRequest, or 415/406 for kinds it cannot decode).

/// Why a Kubernetes protobuf body could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body was empty, or held only the magic prefix (upstream: "empty data"/"empty body").
    #[error("empty protobuf body")]
    Empty,
    /// The body does not start with `k8s\0`.
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    BadMagic,
    /// Wire-format error while decoding `message` (truncated bytes, bad tags, depth limit).
    #[error("invalid protobuf encoding of {message}: {source}")]
    Wire {
        message: String,
        #[source]
        source: prost::DecodeError,
    },
    /// The envelope carried no kind or no version and no default was given.
    #[error("object has no {0} in its protobuf envelope")]
    MissingTypeMeta(&'static str),
    /// `raw` is declared as something other than protobuf (e.g. gzip-encoded).
    #[error("unsupported protobuf envelope content {0:?}")]
    UnsupportedContent(String),
    /// The group/version/kind is not a built-in kind this module knows.
    #[error("no protobuf message for kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    /// Objects nested deeper than the module's limit.
    #[error("object nesting exceeds the limit of {0} levels")]
    TooDeep(usize),
    /// A decoded value that upstream's JSON marshalling would also refuse.
    #[error("invalid value in {field}: {reason}")]
    InvalidValue { field: String, reason: String },
    /// The embedded descriptor set or Go-semantics table is corrupt (a build defect, not bad input).
    #[error("embedded Kubernetes protobuf schema is unusable: {0}")]
    Schema(String),
}

impl ProtobufError {
    pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ProtobufError::InvalidValue {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
