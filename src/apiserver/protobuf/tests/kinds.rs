//! Kinds built the way kubectl's typed clients send them, compared with the JSON
//! upstream writes for the same Go object.

use prost_reflect::Value as V;
use serde_json::{json, Value};

use super::super::{decode, decode_with_defaults, ProtobufError};
use super::{body, gogo_meta, map, msg, quantity, s, APPS, CORE, META};

#[test]
fn configmap_from_kubectl_create() {
    let cm = msg(
        CORE,
        "ConfigMap",
        vec![
            ("metadata", gogo_meta("app-config", "default", vec![])),
            ("data", map(&[("mode", s("fast")), ("empty", s(""))])),
            (
                "binaryData",
                map(&[("blob", V::Bytes(vec![0u8, 1, 2, 255].into()))]),
            ),
        ],
    );
    assert_eq!(
        decode(&body("v1", "ConfigMap", &cm)).expect("decode"),
        json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "app-config", "namespace": "default"},
            "data": {"empty": "", "mode": "fast"},
            "binaryData": {"blob": "AAEC/w=="},
        })
    );
}

#[test]
fn secret_bytes_are_base64_and_pointer_false_is_kept() {
    let secret = msg(
        CORE,
        "Secret",
        vec![
            ("metadata", gogo_meta("db", "prod", vec![])),
            ("immutable", V::Bool(false)),
            (
                "data",
                map(&[("password", V::Bytes(b"s3cr\xe9t".to_vec().into()))]),
            ),
            ("type", s("Opaque")),
        ],
    );
    assert_eq!(
        decode(&body("v1", "Secret", &secret)).expect("decode"),
        json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": "db", "namespace": "prod"},
            "immutable": false,
            "data": {"password": "czNjcul0"},
            "type": "Opaque",
        })
    );
}

#[test]
fn namespace_keeps_empty_structs_like_go() {
    let ns = msg(
        CORE,
        "Namespace",
        vec![
            ("metadata", gogo_meta("team-a", "", vec![])),
            ("spec", msg(CORE, "NamespaceSpec", vec![])),
            (
                "status",
                msg(CORE, "NamespaceStatus", vec![("phase", s(""))]),
            ),
        ],
    );
    assert_eq!(
        decode(&body("v1", "Namespace", &ns)).expect("decode"),
        json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "team-a"}, "spec": {}, "status": {}})
    );
    // Absent non-pointer structs are Go zero values and still written.
    let bare = msg(CORE, "Namespace", vec![]);
    assert_eq!(
        decode(&body("v1", "Namespace", &bare)).expect("decode"),
        json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {}, "spec": {}, "status": {}})
    );
}

#[test]
fn deployment_with_container_ports_and_resources() {
    let labels = map(&[("app", s("web"))]);
    let container = msg(
        CORE,
        "Container",
        vec![
            ("name", s("nginx")),
            ("image", s("nginx:1.27")),
            ("workingDir", s("")),
            ("imagePullPolicy", s("")),
            ("stdin", V::Bool(false)),
            (
                "ports",
                V::List(vec![msg(
                    CORE,
                    "ContainerPort",
                    vec![
                        ("name", s("")),
                        ("hostPort", V::I32(0)),
                        ("containerPort", V::I32(80)),
                        ("protocol", s("TCP")),
                    ],
                )]),
            ),
            (
                "resources",
                msg(
                    CORE,
                    "ResourceRequirements",
                    vec![
                        ("limits", map(&[("cpu", quantity("500m"))])),
                        ("requests", map(&[("memory", quantity("64Mi"))])),
                    ],
                ),
            ),
        ],
    );
    let deployment = msg(
        APPS,
        "Deployment",
        vec![
            (
                "metadata",
                gogo_meta("web", "default", vec![("labels", labels.clone())]),
            ),
            (
                "spec",
                msg(
                    APPS,
                    "DeploymentSpec",
                    vec![
                        ("replicas", V::I32(0)),
                        (
                            "selector",
                            msg(META, "LabelSelector", vec![("matchLabels", labels.clone())]),
                        ),
                        (
                            "template",
                            msg(
                                CORE,
                                "PodTemplateSpec",
                                vec![
                                    (
                                        "metadata",
                                        gogo_meta("", "", vec![("labels", labels.clone())]),
                                    ),
                                    (
                                        "spec",
                                        msg(
                                            CORE,
                                            "PodSpec",
                                            vec![
                                                ("containers", V::List(vec![container])),
                                                ("restartPolicy", s("")),
                                                ("hostNetwork", V::Bool(false)),
                                            ],
                                        ),
                                    ),
                                ],
                            ),
                        ),
                        (
                            "strategy",
                            msg(APPS, "DeploymentStrategy", vec![("type", s(""))]),
                        ),
                        ("minReadySeconds", V::I32(0)),
                        ("paused", V::Bool(false)),
                    ],
                ),
            ),
            (
                "status",
                msg(APPS, "DeploymentStatus", vec![("replicas", V::I32(0))]),
            ),
        ],
    );
    assert_eq!(
        decode(&body("apps/v1", "Deployment", &deployment)).expect("decode"),
        json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                    }]},
                },
                "strategy": {},
            },
            "status": {},
        })
    );
}

#[test]
fn service_target_port_int_or_string() {
    let port = |name: &str, port: i32, target: V| {
        msg(
            CORE,
            "ServicePort",
            vec![
                ("name", s(name)),
                ("protocol", s("TCP")),
                ("port", V::I32(port)),
                ("targetPort", target),
            ],
        )
    };
    let intstr = "k8s.io.apimachinery.pkg.util.intstr";
    let svc = msg(
        CORE,
        "Service",
        vec![
            ("metadata", gogo_meta("web", "default", vec![])),
            (
                "spec",
                msg(
                    CORE,
                    "ServiceSpec",
                    vec![(
                        "ports",
                        V::List(vec![
                            port(
                                "http",
                                80,
                                msg(
                                    intstr,
                                    "IntOrString",
                                    vec![("type", V::I64(1)), ("strVal", s("web"))],
                                ),
                            ),
                            port(
                                "https",
                                443,
                                msg(
                                    intstr,
                                    "IntOrString",
                                    vec![("type", V::I64(0)), ("intVal", V::I32(8443))],
                                ),
                            ),
                            msg(CORE, "ServicePort", vec![("port", V::I32(9000))]),
                        ]),
                    )],
                ),
            ),
        ],
    );
    assert_eq!(
        decode(&body("v1", "Service", &svc)).expect("decode")["spec"],
        json!({"ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"},
            {"name": "https", "protocol": "TCP", "port": 443, "targetPort": 8443},
            // IntOrString is a struct: Go's omitempty never drops it.
            {"port": 9000, "targetPort": 0},
        ]})
    );
}

#[test]
fn job_from_kubectl_create_job() {
    let job = msg(
        "k8s.io.api.batch.v1",
        "Job",
        vec![
            ("metadata", gogo_meta("pi", "default", vec![])),
            (
                "spec",
                msg(
                    "k8s.io.api.batch.v1",
                    "JobSpec",
                    vec![
                        ("backoffLimit", V::I32(0)),
                        ("activeDeadlineSeconds", V::I64(600)),
                        (
                            "template",
                            msg(
                                CORE,
                                "PodTemplateSpec",
                                vec![
                                    ("metadata", gogo_meta("", "", vec![])),
                                    (
                                        "spec",
                                        msg(
                                            CORE,
                                            "PodSpec",
                                            vec![
                                                (
                                                    "containers",
                                                    V::List(vec![msg(
                                                        CORE,
                                                        "Container",
                                                        vec![
                                                            ("name", s("pi")),
                                                            ("image", s("perl")),
                                                            (
                                                                "command",
                                                                V::List(vec![
                                                                    s("perl"),
                                                                    s("-e"),
                                                                    s("1"),
                                                                ]),
                                                            ),
                                                            (
                                                                "resources",
                                                                msg(
                                                                    CORE,
                                                                    "ResourceRequirements",
                                                                    vec![],
                                                                ),
                                                            ),
                                                        ],
                                                    )]),
                                                ),
                                                ("restartPolicy", s("Never")),
                                            ],
                                        ),
                                    ),
                                ],
                            ),
                        ),
                    ],
                ),
            ),
            ("status", msg("k8s.io.api.batch.v1", "JobStatus", vec![])),
        ],
    );
    assert_eq!(
        decode(&body("batch/v1", "Job", &job)).expect("decode"),
        json!({
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": {"name": "pi", "namespace": "default"},
            "spec": {
                "activeDeadlineSeconds": 600,
                "backoffLimit": 0,
                "template": {
                    "metadata": {},
                    "spec": {
                        "containers": [{"name": "pi", "image": "perl", "command": ["perl", "-e", "1"], "resources": {}}],
                        "restartPolicy": "Never",
                    },
                },
            },
            "status": {},
        })
    );
}

#[test]
fn delete_options_keep_zero_grace_period() {
    let opts = msg(
        META,
        "DeleteOptions",
        vec![
            ("gracePeriodSeconds", V::I64(0)),
            ("propagationPolicy", s("Foreground")),
            ("dryRun", V::List(vec![s("All")])),
        ],
    );
    let want = |api_version: &str| {
        json!({
            "kind": "DeleteOptions",
            "apiVersion": api_version,
            "gracePeriodSeconds": 0,
            "propagationPolicy": "Foreground",
            "dryRun": ["All"],
        })
    };
    // client-go frames DeleteOptions in the group version of the resource.
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1", "batch/v1"] {
        assert_eq!(
            decode(&body(api_version, "DeleteOptions", &opts)).expect(api_version),
            want(api_version)
        );
    }
}

#[test]
fn subresource_kinds_decode() {
    let eviction = msg(
        "k8s.io.api.policy.v1",
        "Eviction",
        vec![("metadata", gogo_meta("web-0", "default", vec![]))],
    );
    assert_eq!(
        decode(&body("policy/v1", "Eviction", &eviction)).expect("eviction"),
        json!({"kind": "Eviction", "apiVersion": "policy/v1", "metadata": {"name": "web-0", "namespace": "default"}})
    );
    let scale = msg(
        "k8s.io.api.autoscaling.v1",
        "Scale",
        vec![(
            "spec",
            msg(
                "k8s.io.api.autoscaling.v1",
                "ScaleSpec",
                vec![("replicas", V::I32(0))],
            ),
        )],
    );
    // ScaleSpec.replicas is a plain int32 with omitempty: 0 disappears, as upstream.
    assert_eq!(
        decode(&body("autoscaling/v1", "Scale", &scale)).expect("scale"),
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {}, "spec": {}, "status": {"replicas": 0}})
    );
    let binding = msg(
        CORE,
        "Binding",
        vec![(
            "target",
            msg(
                CORE,
                "ObjectReference",
                vec![("kind", s("Node")), ("name", s("node-1"))],
            ),
        )],
    );
    assert_eq!(
        decode(&body("v1", "Binding", &binding)).expect("binding"),
        json!({"kind": "Binding", "apiVersion": "v1", "metadata": {}, "target": {"kind": "Node", "name": "node-1"}})
    );
}

#[test]
fn inline_structs_are_flattened() {
    let pod_spec = msg(
        CORE,
        "PodSpec",
        vec![(
            "volumes",
            V::List(vec![msg(
                CORE,
                "Volume",
                vec![
                    ("name", s("cfg")),
                    (
                        "volumeSource",
                        msg(
                            CORE,
                            "VolumeSource",
                            vec![(
                                "configMap",
                                msg(
                                    CORE,
                                    "ConfigMapVolumeSource",
                                    vec![(
                                        "localObjectReference",
                                        msg(
                                            CORE,
                                            "LocalObjectReference",
                                            vec![("name", s("app-config"))],
                                        ),
                                    )],
                                ),
                            )],
                        ),
                    ),
                ],
            )]),
        )],
    );
    let pod = msg(CORE, "Pod", vec![("spec", pod_spec)]);
    assert_eq!(
        decode(&body("v1", "Pod", &pod)).expect("decode")["spec"]["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "app-config"}}])
    );
}

#[test]
fn times_follow_upstream_precision() {
    let meta = msg(
        META,
        "ObjectMeta",
        vec![
            ("name", s("x")),
            (
                "creationTimestamp",
                msg(
                    META,
                    "Time",
                    vec![("seconds", V::I64(1_767_323_105)), ("nanos", V::I32(999))],
                ),
            ),
            (
                "deletionTimestamp",
                msg(META, "Time", vec![("seconds", V::I64(0))]),
            ),
        ],
    );
    let got = decode(&body(
        "v1",
        "ConfigMap",
        &msg(CORE, "ConfigMap", vec![("metadata", meta)]),
    ))
    .expect("decode");
    // Time drops nanos on decode; the Unix epoch is a real time, not Go's zero.
    assert_eq!(
        got["metadata"]["creationTimestamp"],
        json!("2026-01-02T03:05:05Z")
    );
    assert_eq!(
        got["metadata"]["deletionTimestamp"],
        json!("1970-01-01T00:00:00Z")
    );

    let event = msg(
        "k8s.io.api.events.v1",
        "Event",
        vec![
            (
                "eventTime",
                msg(
                    META,
                    "MicroTime",
                    vec![
                        ("seconds", V::I64(1_767_323_105)),
                        ("nanos", V::I32(123_456_789)),
                    ],
                ),
            ),
            ("reason", s("Started")),
        ],
    );
    let got = decode(&body("events.k8s.io/v1", "Event", &event)).expect("decode");
    assert_eq!(got["eventTime"], json!("2026-01-02T03:05:05.123456Z"));
    // Unset non-pointer MicroTime is written as null, like Go.
    assert_eq!(got["deprecatedFirstTimestamp"], Value::Null);

    let bad = msg(
        META,
        "ObjectMeta",
        vec![(
            "creationTimestamp",
            msg(META, "Time", vec![("seconds", V::I64(i64::MAX))]),
        )],
    );
    assert!(matches!(
        decode(&body(
            "v1",
            "ConfigMap",
            &msg(CORE, "ConfigMap", vec![("metadata", bad)])
        )),
        Err(ProtobufError::InvalidValue { .. })
    ));
}

#[test]
fn raw_extension_embeds_json_and_nested_protobuf() {
    let runtime = "k8s.io.apimachinery.pkg.runtime";
    let revision = |data: &[u8]| {
        msg(
            APPS,
            "ControllerRevision",
            vec![
                (
                    "data",
                    msg(
                        runtime,
                        "RawExtension",
                        vec![("raw", V::Bytes(data.to_vec().into()))],
                    ),
                ),
                ("revision", V::I64(3)),
            ],
        )
    };
    let got = decode(&body(
        "apps/v1",
        "ControllerRevision",
        &revision(br#"{"spec":{"x":[1,2]}}"#),
    ))
    .expect("json raw");
    assert_eq!(got["data"], json!({"spec": {"x": [1, 2]}}));
    assert_eq!(got["revision"], json!(3));

    let inner = body(
        "v1",
        "ConfigMap",
        &msg(CORE, "ConfigMap", vec![("data", map(&[("k", s("v"))]))]),
    );
    let got = decode(&body("apps/v1", "ControllerRevision", &revision(&inner))).expect("nested");
    assert_eq!(
        got["data"],
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {}, "data": {"k": "v"}})
    );

    assert!(matches!(
        decode(&body(
            "apps/v1",
            "ControllerRevision",
            &revision(b"{not json")
        )),
        Err(ProtobufError::InvalidValue { .. })
    ));
}

#[test]
fn defaults_fill_missing_type_meta() {
    let cm = msg(CORE, "ConfigMap", vec![("data", map(&[("a", s("b"))]))]);
    let got = decode_with_defaults(&body("", "", &cm), "v1", "ConfigMap").expect("decode");
    assert_eq!(
        got,
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {}, "data": {"a": "b"}})
    );
    assert!(matches!(
        decode(&body("", "", &cm)),
        Err(ProtobufError::MissingTypeMeta("kind"))
    ));
}
