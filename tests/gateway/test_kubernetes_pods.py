"""Pods shaped by configuration, on the real API server (`sim` tier, kwok
nodes) with the real operator: a profile's node pool, tolerations, affinity,
resources, image, pull secrets, labels, annotations, volumes and service
account reach the scheduler and worker Pods the operator creates, and the
kube-scheduler places them by the profile's nodeSelector."""

import base64

import pytest

from test_kubernetes import k8s_backend, wait_for

# Every pod key: global in [backend], the profile's over it. kwok nodes carry
# type=kwok and their hostname, so the selector below has exactly one node.
POD_KEYS = """
image_pull_policy = "IfNotPresent"
image_pull_secrets = [{name = "regcred"}]
node_selector = {type = "kwok"}
tolerations = [{key = "everyone", operator = "Exists"}]
affinity = {nodeAffinity = {requiredDuringSchedulingIgnoredDuringExecution = {nodeSelectorTerms = [{matchExpressions = [{key = "type", operator = "In", values = ["kwok"]}]}]}}}
volumes = [{name = "scratch", emptyDir = {sizeLimit = "1Gi"}}]
volume_mounts = [{name = "scratch", mountPath = "/scratch"}]
service_account = "podshape-dask"
labels = {"example.com/team" = "geo"}
annotations = {"example.com/cost-centre" = "42"}
scheduler_cores = 0.25
scheduler_memory = "512 MiB"
worker_extra_pod_config = {terminationGracePeriodSeconds = 45}
"""

PROFILES = """
[[options.profiles]]
name = "small"
worker_cores = 0.5
worker_memory = "1 GiB"

[[options.profiles]]
name = "pool"
worker_cores = 0.5
worker_memory = "1 GiB"
worker_cores_limit = 1
worker_memory_limit = "2 GiB"
image = "dask-rs/worker:pool"
image_pull_policy = "Never"
node_selector = {"kubernetes.io/hostname" = "kwok-node-3"}
tolerations = [{key = "dedicated", operator = "Equal", value = "dask", effect = "NoSchedule"}]
labels = {tier = "pool"}
environment = {PROFILE_VAR = "pool"}
worker_extra_container_config = {securityContext = {runAsUser = 1000}, env = [{name = "WORKER_ONLY", value = "1"}]}
"""


@pytest.mark.timeout(180)
def test_a_profiles_pod_keys_reach_the_scheduler_and_worker_pods(kubectl, namespace, operator, start_gateway):  # noqa: F811
    kubectl("create", "serviceaccount", "podshape-dask", "-n", namespace)
    gw = start_gateway("[cluster]\nstart_timeout = 120\n" + PROFILES, backend=k8s_backend(namespace) + POD_KEYS)
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {"cluster_options": {"profile": "pool"}})
    assert status == 201, body
    name = body["name"]
    secret = kubectl.json("get", "secret", f"dask-{name}-gateway", "-n", namespace)
    token = base64.b64decode(secret["data"]["api-token"]).decode()
    beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 1}
    assert gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", body=beat, headers={"Authorization": f"token {token}"})[0] == 200

    def pods(component):
        selector = f"dask.org/cluster-name=dask-{name},dask.org/component={component}"
        items = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]
        return items if items and all(p["spec"].get("nodeName") for p in items) else None

    scheduler = wait_for(lambda: pods("scheduler"), "a placed scheduler pod")[0]
    worker = wait_for(lambda: pods("worker"), "a placed worker pod")[0]
    for role, pod in (("scheduler", scheduler), ("worker", worker)):
        spec, meta = pod["spec"], pod["metadata"]
        container = spec["containers"][0]
        assert container["image"] == "dask-rs/worker:pool", role
        assert container["imagePullPolicy"] == "Never", role
        assert {"name": "PROFILE_VAR", "value": "pool"} in container["env"], role
        assert spec["imagePullSecrets"] == [{"name": "regcred"}], role
        assert spec["nodeSelector"] == {"type": "kwok", "kubernetes.io/hostname": "kwok-node-3"}, role
        assert spec["nodeName"] == "kwok-node-3", f"{role} placed by the profile's nodeSelector"
        tolerations = [t for t in spec["tolerations"] if t.get("key") == "dedicated"]
        assert tolerations == [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}], role
        assert not [t for t in spec["tolerations"] if t.get("key") == "everyone"], "the profile's replace the global ones"
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["key"] == "type", role
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "1Gi"} and "dask-credentials" in volumes, role
        assert {"name": "scratch", "mountPath": "/scratch"} in container["volumeMounts"], role
        assert spec["serviceAccountName"] == "podshape-dask", role
        assert meta["labels"]["example.com/team"] == "geo" and meta["labels"]["tier"] == "pool", role
        assert meta["annotations"]["example.com/cost-centre"] == "42", role

    resources = scheduler["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "250m", "memory": str(512 << 20)}
    assert resources["limits"] == {"cpu": "1", "memory": str(512 << 20)}
    assert scheduler["status"].get("qosClass") == "Burstable", "a scheduler is never BestEffort"
    resources = worker["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": str(1 << 30)}
    assert resources["limits"] == {"cpu": "1", "memory": str(2 << 30)}
    container = worker["spec"]["containers"][0]
    assert container["securityContext"] == {"runAsUser": 1000}, "the profile's container patch"
    env = {e["name"] for e in container["env"]}
    assert {"WORKER_ONLY", "DASK_WORKER_NAME", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"} <= env, "a patch's list is appended"
    args = worker["spec"]["containers"][0]["args"]
    assert args[args.index("--memory-limit") + 1] == str(2 << 30)
    assert worker["spec"]["terminationGracePeriodSeconds"] == 45, "the global worker patch"

    # A profile without pod keys of its own gets the global ones.
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "bob", {"cluster_options": {"profile": "small"}})
    assert status == 201
    dc = kubectl.json("get", "daskcluster", f"dask-{body['name']}", "-n", namespace)
    spec = dc["spec"]["worker"]["spec"]
    assert spec["nodeSelector"] == {"type": "kwok"} and spec["tolerations"][0]["key"] == "everyone"
    assert spec["containers"][0]["image"] == "dask-rs/worker:test"
    assert spec["containers"][0]["resources"]["limits"] == {"cpu": "0.500", "memory": "1073741824"}


def test_a_bad_pod_key_stops_the_gateway_naming_it(tmp_path):
    import subprocess
    from gatewaylib import gateway_bin
    path = tmp_path / "gateway.toml"
    path.write_text(PROFILES + '[backend]\ntype = "kubernetes"\ntolerations = [{key = "a", operater = "Exists"}]\n')
    proc = subprocess.run([gateway_bin(), "--config", str(path), "check-config"], capture_output=True, text=True)
    assert proc.returncode != 0 and "backend.tolerations" in proc.stderr and "operater" in proc.stderr, proc.stderr
