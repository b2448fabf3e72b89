"""The control plane started by tests/k8s/cluster is a real, working Kubernetes:
each test checks one property later tests of the operator and gateway rely on."""

import uuid

from testlib import poll

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.harness.dask-rs.test}
spec:
  group: harness.dask-rs.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {size: {type: integer}}
"""


def test_apiserver_ready(kubectl):
    assert kubectl("get", "--raw", "/readyz").strip() == "ok"
    version = kubectl.json("version")
    assert version["serverVersion"]["gitVersion"].startswith("v1.35.")


def test_custom_resource_is_served(kubectl, namespace):
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.harness.dask-rs.test", "--timeout=30s")
    # --validate=false: let the server prune the unknown field instead of rejecting it.
    kubectl("-n", namespace, "apply", "--validate=false", "-f", "-", input="""
apiVersion: harness.dask-rs.test/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3, unknown: dropped}
""")
    widget = kubectl.json("-n", namespace, "get", "widget", "w1")
    # The structural schema is enforced: known fields kept, unknown ones pruned.
    assert widget["spec"] == {"size": 3}


def test_deployment_pods_become_ready_on_simulated_nodes(kubectl, namespace):
    kubectl("-n", namespace, "apply", "-f", "-", input="""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {type: kwok}
      containers: [{name: web, image: example.invalid/web:1}]
""")
    kubectl("-n", namespace, "wait", "--for=condition=Available", "deployment/web", "--timeout=90s")
    pods = kubectl.json("-n", namespace, "get", "pods", "-l", "app=web")["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert pod["status"]["phase"] == "Running" and ready["Ready"] == "True"


def test_deleting_an_owner_garbage_collects_its_children(kubectl, namespace):
    kubectl("-n", namespace, "create", "configmap", "owner")
    uid = kubectl("-n", namespace, "get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}")
    kubectl("-n", namespace, "apply", "-f", "-", input=f"""
apiVersion: v1
kind: Secret
metadata:
  name: child
  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}]
stringData: {{k: v}}
""")
    kubectl("-n", namespace, "delete", "configmap", "owner")
    poll(lambda: kubectl.run("-n", namespace, "get", "secret", "child", check=False).returncode != 0,
         60, "the garbage collector to delete the owned Secret", interval=0.5)


def test_non_admin_user_is_denied_by_rbac(kubectl, namespace, mint_user):
    name = f"user-{uuid.uuid4().hex[:6]}"
    user = mint_user(name)
    denied = user.run("-n", namespace, "get", "pods", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    kubectl("-n", namespace, "create", "role", "pod-reader", "--verb=get,list", "--resource=pods")
    kubectl("-n", namespace, "create", "rolebinding", "pod-reader", "--role=pod-reader", f"--user={name}")
    poll(lambda: user.run("-n", namespace, "get", "pods", check=False).returncode == 0,
         60, "the RoleBinding to take effect", interval=0.5)
    # The grant is namespaced: the rest of the cluster stays closed to this user.
    assert user.run("-n", "default", "get", "pods", check=False).returncode != 0
    assert user.run("get", "secrets", "-A", check=False).returncode != 0
