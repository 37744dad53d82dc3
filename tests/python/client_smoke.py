"""The official Kubernetes Python client against a running rampart server.

Usage: client_smoke.py KUBECONFIG. Exits non-zero with a message on the first mismatch.
"""
import sys
import threading

from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()

names = {ns.metadata.name for ns in core.list_namespace().items}
assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names, names

ns = "py-client"
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

events = []
start_rv = core.list_namespaced_config_map(ns).metadata.resource_version


def watch_cms():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=start_rv, timeout_seconds=10):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=watch_cms)
t.start()

cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"app": "py"}), data={"a": "1"})
created = core.create_namespaced_config_map(ns, cm)
assert created.metadata.resource_version, created
core.patch_namespaced_config_map("cfg", ns, {"data": {"a": "2"}})
got = core.read_namespaced_config_map("cfg", ns)
assert got.data == {"a": "2"}, got.data
assert len(core.list_namespaced_config_map(ns, label_selector="app=py").items) == 1

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    ),
)
apps.create_namespaced_deployment(ns, dep)
apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3

try:
    core.read_namespaced_config_map("missing", ns)
    raise SystemExit("reading a missing object succeeded")
except client.exceptions.ApiException as e:
    assert e.status == 404, e.status

# The client's own e2e test_service_apis (e2e_test/test_client.py), with its assertions:
# status must be present on create, read and patch, a strategic patch adds a port, and the
# delete answer decodes as the deleted Service.
svc_name = "frontend-py"
service_manifest = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"labels": {"name": svc_name}, "name": svc_name},
    "spec": {"ports": [{"name": "port", "port": 80, "protocol": "TCP", "targetPort": 80}],
             "selector": {"name": svc_name}},
}
# This client generation validates request bodies with pydantic: the create takes the model.
resp = core.create_namespaced_service(body=client.V1Service(
    api_version="v1", kind="Service",
    metadata=client.V1ObjectMeta(labels={"name": svc_name}, name=svc_name),
    spec=client.V1ServiceSpec(
        ports=[client.V1ServicePort(name="port", port=80, protocol="TCP", target_port=80)],
        selector={"name": svc_name})), namespace=ns)
assert resp.metadata.name == svc_name and resp.status, resp
assert resp.status.load_balancer is not None, resp.status
resp = core.read_namespaced_service(name=svc_name, namespace=ns)
assert resp.metadata.name == svc_name and resp.status, resp
service_manifest["spec"]["ports"] = [{"name": "new", "port": 8080, "protocol": "TCP", "targetPort": 8080}]
resp = core.patch_namespaced_service(body=service_manifest, name=svc_name, namespace=ns)
assert len(resp.spec.ports) == 2 and resp.status, resp
resp = core.delete_namespaced_service(name=svc_name, body={}, namespace=ns)
assert isinstance(resp, client.V1Service) and resp.metadata.name == svc_name, resp

core.delete_namespaced_config_map("cfg", ns)
t.join(15)
kinds = [k for k, n in events if n == "cfg"]
assert kinds == ["ADDED", "MODIFIED", "DELETED"], events
print("python client: ok")
