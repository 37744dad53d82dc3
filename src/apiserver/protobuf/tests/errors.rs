//! Broken, hostile and unsupported input: always an error, never a panic.

use prost::Message;
use prost_reflect::Value as V;

use super::super::{decode, ProtobufError, MAGIC};
use super::{body, gogo_meta, msg, s, APPS, CORE};

#[test]
fn nesting_is_bounded() {
    let runtime = "k8s.io.apimachinery.pkg.runtime";
    let mut bytes = body("v1", "ConfigMap", &msg(CORE, "ConfigMap", vec![]));
    for _ in 0..60 {
        let revision = msg(
            APPS,
            "ControllerRevision",
            vec![(
                "data",
                msg(
                    runtime,
                    "RawExtension",
                    vec![("raw", V::Bytes(bytes.into()))],
                ),
            )],
        );
        bytes = body("apps/v1", "ControllerRevision", &revision);
    }
    assert!(matches!(decode(&bytes), Err(ProtobufError::TooDeep(100))));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let good = body(
        "v1",
        "ConfigMap",
        &msg(
            CORE,
            "ConfigMap",
            vec![("metadata", gogo_meta("a", "b", vec![]))],
        ),
    );
    assert!(decode(&good).is_ok());
    for cut in 0..good.len() {
        // A cut at a field boundary is a valid, shorter message; any other
        // cut must fail. Neither may panic.
        let r = decode(&good[..cut]);
        assert!(r.is_err() || cut > MAGIC.len(), "prefix of {cut} bytes");
    }
    assert!(matches!(
        decode(&good[..good.len() - 3]),
        Err(ProtobufError::Wire { .. })
    ));
    assert!(matches!(decode(b""), Err(ProtobufError::Empty)));
    assert!(matches!(
        decode(b"k8s\x01\x0a\x00"),
        Err(ProtobufError::BadMagic)
    ));
    assert!(matches!(
        decode(br#"{"kind":"ConfigMap"}"#),
        Err(ProtobufError::BadMagic)
    ));

    // Garbage where the object should be.
    let runtime = "k8s.io.apimachinery.pkg.runtime";
    let V::Message(unknown) = msg(
        runtime,
        "Unknown",
        vec![
            (
                "typeMeta",
                msg(
                    runtime,
                    "TypeMeta",
                    vec![("apiVersion", s("v1")), ("kind", s("ConfigMap"))],
                ),
            ),
            (
                "raw",
                V::Bytes(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01].into()),
            ),
        ],
    ) else {
        unreachable!()
    };
    let garbage = [MAGIC, &unknown.encode_to_vec()].concat();
    assert!(matches!(decode(&garbage), Err(ProtobufError::Wire { .. })));

    // Pseudo-random bytes after the magic never panic.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..400 {
        let mut junk = MAGIC.to_vec();
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(seed as u8);
        }
        let _ = decode(&junk);
    }
}

#[test]
fn unknown_kinds_are_named_in_the_error() {
    let cm = msg(CORE, "ConfigMap", vec![]);
    for (api_version, kind) in [
        ("v1", "Widget"),
        ("stable.example.com/v1", "CronTab"),
        ("v1", "Container"),
        ("apps/v9", "Deployment"),
    ] {
        match decode(&body(api_version, kind, &cm)) {
            Err(ProtobufError::UnknownKind {
                api_version: a,
                kind: k,
            }) => assert_eq!((a.as_str(), k.as_str()), (api_version, kind)),
            other => panic!("{api_version} {kind}: {other:?}"),
        }
    }
}

#[test]
fn deep_message_nesting_is_refused() {
    let apiext = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1";
    let mut schema = msg(apiext, "JSONSchemaProps", vec![("type", s("string"))]);
    for _ in 0..150 {
        schema = msg(
            apiext,
            "JSONSchemaProps",
            vec![("properties", super::map(&[("a", schema)]))],
        );
    }
    let crd = msg(
        apiext,
        "CustomResourceDefinition",
        vec![(
            "spec",
            msg(
                apiext,
                "CustomResourceDefinitionSpec",
                vec![(
                    "versions",
                    V::List(vec![msg(
                        apiext,
                        "CustomResourceDefinitionVersion",
                        vec![(
                            "schema",
                            msg(
                                apiext,
                                "CustomResourceValidation",
                                vec![("openAPIV3Schema", schema)],
                            ),
                        )],
                    )]),
                )],
            ),
        )],
    );
    let got = decode(&body(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &crd,
    ));
    assert!(
        matches!(
            got,
            Err(ProtobufError::Wire { .. } | ProtobufError::TooDeep(_))
        ),
        "{got:?}"
    );
}
