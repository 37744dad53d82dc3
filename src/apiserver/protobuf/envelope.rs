//! The outer framing of a Kubernetes protobuf body: the 4-byte magic `k8s\0`
//! followed by a `runtime.Unknown` message.
//!
//! Copies `k8s.io/apimachinery/pkg/runtime/serializer/protobuf/protobuf.go`
//! (`Serializer.Decode`): empty data and a bare prefix are errors, a wrong
//! prefix is rejected, the group/version/kind comes from `Unknown.typeMeta`
//! with missing parts filled from the caller's expected kind exactly as
//! `copyKindDefaults` does, and `raw` holds the object's own message bytes
//! (which carry no TypeMeta of their own).
//!
//! Unlike upstream, which ignores them, a non-empty `contentEncoding` or a
//! `contentType` other than protobuf is refused: `raw` could then only be
//! misread.

use prost_reflect::{DynamicMessage, Value as PValue};

use super::schema::Schema;
use super::{ProtobufError, MAGIC, MEDIA_TYPE};

/// The decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Envelope {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub raw: Vec<u8>,
}

/// Parses `body`; `defaults` is the (apiVersion, kind) the endpoint expects.
pub(super) fn open(
    schema: &Schema,
    body: &[u8],
    defaults: Option<(&str, &str)>,
) -> Result<Envelope, ProtobufError> {
    let data = match body.strip_prefix(MAGIC) {
        _ if body.is_empty() => return Err(ProtobufError::Empty),
        None => return Err(ProtobufError::BadMagic),
        Some([]) => return Err(ProtobufError::Empty),
        Some(data) => data,
    };
    let unknown_desc = schema.message("k8s.io.apimachinery.pkg.runtime.Unknown")?;
    let unknown =
        DynamicMessage::decode(unknown_desc, data).map_err(|source| ProtobufError::Wire {
            message: "runtime.Unknown".into(),
            source,
        })?;
    let text = |msg: &DynamicMessage, n: u32| match msg.get_field_by_number(n).as_deref() {
        Some(PValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let encoding = text(&unknown, 3);
    let content_type = text(&unknown, 4);
    if !encoding.is_empty() {
        return Err(ProtobufError::UnsupportedContent(format!(
            "contentEncoding {encoding}"
        )));
    }
    if !content_type.is_empty() && content_type != MEDIA_TYPE {
        return Err(ProtobufError::UnsupportedContent(format!(
            "contentType {content_type}"
        )));
    }
    let (api_version, mut kind) = match unknown.get_field_by_number(1).as_deref() {
        Some(PValue::Message(type_meta)) => (text(type_meta, 1), text(type_meta, 2)),
        _ => (String::new(), String::new()),
    };
    let (mut group, mut version) = split_api_version(&api_version)?;
    if let Some((default_api_version, default_kind)) = defaults {
        let (default_group, default_version) = split_api_version(default_api_version)?;
        if kind.is_empty() {
            kind = default_kind.to_string();
        }
        if version.is_empty() && !default_version.is_empty() {
            group = default_group;
            version = default_version;
        }
    }
    if kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta("kind"));
    }
    if version.is_empty() {
        return Err(ProtobufError::MissingTypeMeta("version"));
    }
    let raw = match unknown.get_field_by_number(2).as_deref() {
        Some(PValue::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    };
    Ok(Envelope {
        group,
        version,
        kind,
        raw,
    })
}

/// `schema.ParseGroupVersion`: "" | "v1" | "apps/v1"; more slashes are invalid.
fn split_api_version(api_version: &str) -> Result<(String, String), ProtobufError> {
    let mut parts = api_version.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(v), None, None) => Ok((String::new(), v.to_string())),
        (Some(g), Some(v), None) => Ok((g.to_string(), v.to_string())),
        _ => Err(ProtobufError::invalid(
            "runtime.Unknown.typeMeta.apiVersion",
            format!("unexpected GroupVersion string: {api_version}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::Value as V;

    fn unknown(
        api_version: &str,
        kind: &str,
        raw: &[u8],
        content_type: &str,
        encoding: &str,
    ) -> Vec<u8> {
        let schema = Schema::get().expect("schema");
        let mut tm = DynamicMessage::new(
            schema
                .message("k8s.io.apimachinery.pkg.runtime.TypeMeta")
                .expect("tm"),
        );
        tm.set_field_by_number(1, V::String(api_version.into()));
        tm.set_field_by_number(2, V::String(kind.into()));
        let mut unk = DynamicMessage::new(
            schema
                .message("k8s.io.apimachinery.pkg.runtime.Unknown")
                .expect("u"),
        );
        unk.set_field_by_number(1, V::Message(tm));
        unk.set_field_by_number(2, V::Bytes(raw.to_vec().into()));
        unk.set_field_by_number(3, V::String(encoding.into()));
        unk.set_field_by_number(4, V::String(content_type.into()));
        let mut out = MAGIC.to_vec();
        out.extend(prost::Message::encode_to_vec(&unk));
        out
    }

    #[test]
    fn reads_type_meta_and_raw() {
        let s = Schema::get().expect("schema");
        let env = open(
            s,
            &unknown("apps/v1", "Deployment", b"\x0a\x00", "", ""),
            None,
        )
        .expect("open");
        assert_eq!(
            env,
            Envelope {
                group: "apps".into(),
                version: "v1".into(),
                kind: "Deployment".into(),
                raw: vec![0x0a, 0],
            }
        );
        let env = open(s, &unknown("v1", "Pod", b"", MEDIA_TYPE, ""), None).expect("open");
        assert_eq!((env.group.as_str(), env.version.as_str()), ("", "v1"));
    }

    #[test]
    fn fills_missing_type_meta_like_copy_kind_defaults() {
        let s = Schema::get().expect("schema");
        let env = open(
            s,
            &unknown("", "", b"", "", ""),
            Some(("apps/v1", "Deployment")),
        )
        .expect("open");
        assert_eq!(
            (env.group.as_str(), env.version.as_str(), env.kind.as_str()),
            ("apps", "v1", "Deployment")
        );
        // A version on the wire wins over the default, group included.
        let env = open(
            s,
            &unknown("v1", "", b"", "", ""),
            Some(("apps/v1", "Deployment")),
        )
        .expect("open");
        assert_eq!((env.group.as_str(), env.kind.as_str()), ("", "Deployment"));
        assert!(matches!(
            open(s, &unknown("v1", "", b"", "", ""), None),
            Err(ProtobufError::MissingTypeMeta("kind"))
        ));
        assert!(matches!(
            open(s, &unknown("", "Pod", b"", "", ""), None),
            Err(ProtobufError::MissingTypeMeta("version"))
        ));
    }

    #[test]
    fn rejects_bad_framing() {
        let s = Schema::get().expect("schema");
        assert!(matches!(open(s, b"", None), Err(ProtobufError::Empty)));
        assert!(matches!(open(s, MAGIC, None), Err(ProtobufError::Empty)));
        assert!(matches!(
            open(s, b"k8s", None),
            Err(ProtobufError::BadMagic)
        ));
        assert!(matches!(
            open(s, b"{\"kind\":\"Pod\"}", None),
            Err(ProtobufError::BadMagic)
        ));
        assert!(matches!(
            open(s, b"k8s\0\x0a\x05ab", None),
            Err(ProtobufError::Wire { .. })
        ));
        assert!(matches!(
            open(s, b"k8s\0\xff\xff\xff", None),
            Err(ProtobufError::Wire { .. })
        ));
        assert!(matches!(
            open(s, &unknown("v1", "Pod", b"", "application/json", ""), None),
            Err(ProtobufError::UnsupportedContent(_))
        ));
        assert!(matches!(
            open(s, &unknown("v1", "Pod", b"", "", "gzip"), None),
            Err(ProtobufError::UnsupportedContent(_))
        ));
        assert!(matches!(
            open(s, &unknown("a/b/c", "Pod", b"", "", ""), None),
            Err(ProtobufError::InvalidValue { .. })
        ));
    }
}
