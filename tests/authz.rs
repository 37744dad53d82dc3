//! Authorization through Cedar against a running server: default deny with upstream's 403
//! message naming the reason, the system policies for built-in identities, and node
//! restriction driven by the pod graph (a kubelet reads only what pods bound to it use).

mod harness;

use std::time::Duration;

use harness::{eventually, Identity, Raw, RawResponse, Server};

fn get_as(s: &Server, who: (&str, &str), path: &str) -> RawResponse {
    s.raw(Raw {
        identity: Identity::Pem(who.0, who.1),
        ..Raw::get(path)
    })
}

fn send_as(s: &Server, who: (&str, &str), method: &str, path: &str, body: &str) -> RawResponse {
    s.raw(Raw {
        identity: Identity::Pem(who.0, who.1),
        ..Raw::send(method, path, "application/json", body.as_bytes())
    })
}

#[test]
fn unknown_user_is_denied_with_upstreams_message_and_reason() {
    let s = Server::start();
    let (c, k) = s.client_cert("mallory", &["devs"]);
    let r = get_as(&s, (&c, &k), "/api/v1/namespaces/default/pods");
    assert_eq!(r.status, 403);
    let st = r.json();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(
        st["message"],
        "pods is forbidden: User \"mallory\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\": no policy permits it"
    );
    assert_eq!(st["details"]["kind"], "pods");

    let r = get_as(
        &s,
        (&c, &k),
        "/apis/apps/v1/namespaces/default/deployments/web",
    );
    assert_eq!(r.status, 403);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("deployments.apps \"web\" is forbidden: User \"mallory\" cannot get resource \"deployments\" in API group \"apps\""));

    let r = get_as(&s, (&c, &k), "/metrics");
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["message"],
        "forbidden: User \"mallory\" cannot get path \"/metrics\": no policy permits it"
    );
    // Discovery and health are open to every authenticated identity; nothing else is.
    for path in [
        "/api",
        "/apis",
        "/api/v1",
        "/apis/apps/v1",
        "/version",
        "/healthz",
        "/readyz",
    ] {
        assert_eq!(get_as(&s, (&c, &k), path).status, 200, "{path}");
    }
    assert_eq!(get_as(&s, (&c, &k), "/api/v1/namespaces").status, 403);
    // A denied write changes nothing.
    let r = send_as(
        &s,
        (&c, &k),
        "POST",
        "/api/v1/namespaces/default/configmaps",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"sneaky"}}"#,
    );
    assert_eq!(r.status, 403);
    s.fails(&["get", "configmap", "sneaky"]);
    // kubectl shows the same message.
    let kc = s.data_dir().join("mallory.kubeconfig");
    write_kubeconfig(&s, &kc, &c, &k);
    let out = std::process::Command::new(harness::kubectl_bin())
        .args(["--kubeconfig", kc.to_str().unwrap(), "get", "pods"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error from server (Forbidden): pods is forbidden: User \"mallory\" cannot list resource \"pods\"")
            && err.contains("no policy permits it"),
        "{err}"
    );
}

fn write_kubeconfig(s: &Server, path: &std::path::Path, cert: &str, key: &str) {
    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let admin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.kubeconfig()).unwrap()).unwrap();
    let server = admin["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: default}}\ncurrent-context: x\n",
        b64(&s.ca_pem()),
        b64(cert),
        b64(key)
    );
    std::fs::write(path, kc).unwrap();
}

#[test]
fn node_reads_only_what_its_pods_use_and_writes_only_its_own_objects() {
    let s = Server::start();
    let (n1c, n1k) = s.client_cert("system:node:n1", &["system:nodes"]);
    let (n2c, n2k) = s.client_cert("system:node:n2", &["system:nodes"]);
    let n1 = (n1c.as_str(), n1k.as_str());
    let n2 = (n2c.as_str(), n2k.as_str());
    s.ok(&["create", "secret", "generic", "s1", "--from-literal=k=v"]);
    s.ok(&["create", "secret", "generic", "other", "--from-literal=k=v"]);
    s.ok(&["create", "configmap", "c1", "--from-literal=k=v"]);
    let secret = "/api/v1/namespaces/default/secrets/s1";
    // Nothing references s1 yet: no node may read it.
    assert_eq!(get_as(&s, n1, secret).status, 403);
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
      "spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox",
        "env":[{"name":"A","valueFrom":{"secretKeyRef":{"name":"s1","key":"k"}}}],
        "envFrom":[{"configMapRef":{"name":"c1"}}]}]}}"#;
    s.ok_in(&["create", "-f", "-"], pod);
    assert!(
        eventually(Duration::from_secs(2), || get_as(&s, n1, secret).status
            == 200),
        "n1 can read the secret its pod uses"
    );
    assert_eq!(
        get_as(&s, n1, "/api/v1/namespaces/default/configmaps/c1").status,
        200
    );
    assert_eq!(
        get_as(&s, n2, secret).status,
        403,
        "n2 runs no pod using s1"
    );
    assert_eq!(
        get_as(&s, n1, "/api/v1/namespaces/default/secrets/other").status,
        403
    );
    assert_eq!(
        get_as(&s, n1, "/api/v1/namespaces/default/secrets").status,
        403,
        "no listing secrets"
    );
    // Pod status: only the node the pod is bound to.
    let status = r#"{"status":{"phase":"Running"}}"#;
    let path = "/api/v1/namespaces/default/pods/web/status";
    let patch = |who: (&str, &str)| {
        s.raw(Raw {
            identity: Identity::Pem(who.0, who.1),
            ..Raw::send(
                "PATCH",
                path,
                "application/merge-patch+json",
                status.as_bytes(),
            )
        })
    };
    assert_eq!(patch(n2).status, 403);
    assert_eq!(patch(n1).status, 200);
    // Its own Node and Lease, not another's.
    let node = |name: &str| {
        format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}}}}"#)
    };
    assert_eq!(
        send_as(&s, n1, "POST", "/api/v1/nodes", &node("n1")).status,
        201
    );
    assert_eq!(
        get_as(&s, n2, "/api/v1/nodes/n1").status,
        200,
        "nodes read other nodes"
    );
    let r = send_as(
        &s,
        n2,
        "PATCH",
        "/api/v1/nodes/n1",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        send_as(&s, n2, "DELETE", "/api/v1/nodes/n1", "").status,
        403
    );
    assert_eq!(
        get_as(
            &s,
            n1,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2"
        )
        .status,
        403
    );
    // Once the pod is gone the secret is out of reach again.
    s.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    assert!(
        eventually(Duration::from_secs(2), || get_as(&s, n1, secret).status
            == 403),
        "access ends with the pod"
    );
    // A user merely *named* like a node (not in system:nodes) gets nothing.
    let (fc, fk) = s.client_cert("system:node:n1", &["devs"]);
    assert_eq!(get_as(&s, (&fc, &fk), "/api/v1/nodes").status, 403);
}

#[test]
fn control_plane_identities_get_their_slice_only() {
    let s = Server::start();
    let (pc, pk) = s.client_cert("system:kube-proxy:n1", &["system:node-proxier"]);
    let proxy = (pc.as_str(), pk.as_str());
    assert_eq!(get_as(&s, proxy, "/api/v1/services").status, 200);
    assert_eq!(
        get_as(&s, proxy, "/apis/discovery.k8s.io/v1/endpointslices").status,
        200
    );
    assert_eq!(get_as(&s, proxy, "/api/v1/secrets").status, 403);
    // NetworkPolicy enforcement runs with this identity: pods and policies readable,
    // never writable.
    assert_eq!(
        get_as(&s, proxy, "/api/v1/namespaces/default/pods").status,
        200
    );
    assert_eq!(
        get_as(&s, proxy, "/apis/networking.k8s.io/v1/networkpolicies").status,
        200
    );
    assert_eq!(get_as(&s, proxy, "/api/v1/configmaps").status, 403);

    let (bc, bk) = s.client_cert("system:bootstrap:abcdef", &["system:bootstrappers"]);
    let boot = (bc.as_str(), bk.as_str());
    assert_eq!(
        get_as(
            &s,
            boot,
            "/apis/certificates.k8s.io/v1/certificatesigningrequests"
        )
        .status,
        200
    );
    assert_eq!(get_as(&s, boot, "/api/v1/nodes").status, 403);
    assert_eq!(
        get_as(&s, boot, "/api/v1/namespaces/kube-system/secrets").status,
        403
    );

    let (cc, ck) = s.client_cert("system:kube-controller-manager", &[]);
    let cm = (cc.as_str(), ck.as_str());
    assert_eq!(get_as(&s, cm, "/api/v1/secrets").status, 200);
    // It may reconcile objects but not act as someone else or reach operator endpoints.
    let r = s.raw(Raw {
        identity: Identity::Pem(cm.0, cm.1),
        ..Raw::get("/rampart/v1/certificates")
    });
    assert_eq!(r.status, 403);
}
