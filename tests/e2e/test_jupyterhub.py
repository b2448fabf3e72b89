"""JupyterHub + the gateway on real pods, as a hub admin deploys them: the
chart installed with JupyterHub auth, a real JupyterHub (PyPI `jupyterhub`,
dummy authenticator, configurable-http-proxy from npm) with the gateway
registered as its service, and a user's notebook pod whose environment is
exactly the chart's recipe (ConfigMap <release>-dask-rs-gateway-client).
Stand-in: the pod is made by the test, not by a spawner, and its token is
one minted for the user through the Hub's API, not the server's own token
(tests/gateway/test_jupyterhub_real.py runs the cells with the token of a
server the Hub spawned; tests/platform runs KubeSpawner). Runs inside the pods tier's
network namespace (`tests/k8s/cluster exec pytest tests/e2e`); the Hub
listens on the tier's bridge address, where pods reach it."""

import base64
import contextlib
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hublib import Hub
from testlib import poll

from hub_notebook import daily_temperatures, seed_cells

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "dask-hub"
RELEASE = "hub"
GATEWAY = f"{RELEASE}-dask-rs-gateway"
SERVICE = "dask-gateway"
PREFIX = f"/services/{SERVICE}"
# The pods tier's bridge: the network namespace's own address, which pods reach.
BRIDGE_IP = "10.88.0.1"


def http(method, url, token=None, body=None, scheme="token"):
    """(status, parsed JSON or text) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"{scheme} {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode(errors="replace")


@pytest.fixture(scope="module")
def hub_deployment(kubectl, release, chart_image_values, tmp_path_factory):
    """The chart's gateway in NAMESPACE with JupyterHub auth (the session's
    release `dr` provides the CRDs and the operator), and the Hub."""
    tmp = tmp_path_factory.mktemp("hub")
    # Ports first: the Hub's API URL goes into the gateway's config, and the
    # Hub needs the gateway's token, which the chart generates.
    hub = Hub(tmp, ip=BRIDGE_IP)
    values = tmp / "values.yaml"
    values.write_text(json.dumps({
        "crds": {"install": False},
        "operator": {"enabled": False},
        "gateway": {
            "prefix": PREFIX,
            "auth": {"type": "jupyterhub", "jupyterhubApiUrl": hub.api_url,
                     "jupyterhub": {"serviceName": SERVICE}},
            # Browsers (here: the notebook pod) open dashboards through the Hub's proxy.
            "client": {"publicAddress": f"{hub.public_url}{PREFIX}",
                       # The hub's default differs from the gateway's (small): the
                       # notebook's cluster_options() shows which one it got.
                       "clusterOptions": {"profile": "medium"}},
        },
    }))
    proc = subprocess.run(["helm", "install", RELEASE, str(ROOT / "charts" / "dask-rs"), "--namespace", NAMESPACE,
                           "--create-namespace", "-f", str(values), *chart_image_values, "--wait", "--timeout", "180s"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"helm install failed: {proc.stderr}"
    try:
        secret = kubectl.json("get", "secret", f"{GATEWAY}-hub-token", "-n", NAMESPACE)
        gateway_token = base64.b64decode(secret["data"]["token"]).decode()
        service = kubectl.json("get", "service", GATEWAY, "-n", NAMESPACE)
        gateway_url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
        # kube-proxy programs a new Service a moment after its pod is ready.
        poll(lambda: reachable(gateway_url), 60, "the gateway Service to answer")
        hub.start(services=[Hub.service(SERVICE, gateway_token, url=gateway_url)],
                  user_scopes=["self", f"access:services!service={SERVICE}"],
                  roles=[{"name": "service-reader", "scopes": ["list:services", "read:services"], "services": ["admin-bot"]}])
        yield hub, gateway_url
    finally:
        hub.stop()
        subprocess.run(["helm", "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"], capture_output=True)
        kubectl.run("delete", "namespace", NAMESPACE, "--timeout=120s", check=False)


def user_token(hub, name, scopes=None):
    """A new Hub user `name` and a token of theirs (their own scopes by default)."""
    hub.add_user(name)
    return hub.new_token(name, scopes)[0]


def reachable(url):
    try:
        urllib.request.urlopen(url, timeout=1)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def notebook_pod(name, image, token_secret):
    """A stand-in for a single-user server's pod with the chart's recipe:
    the client ConfigMap as its environment, a Hub token minted for the
    user, and the notebook (hub_notebook.py) to run."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "jupyterhub-singleuser"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "notebook", "image": image, "imagePullPolicy": "Never",
                "command": ["python", "/notebook/hub_notebook.py"],
                "envFrom": [{"configMapRef": {"name": f"{GATEWAY}-client"}}],
                "env": [{"name": "JUPYTERHUB_API_TOKEN",
                         "valueFrom": {"secretKeyRef": {"name": token_secret, "key": "token"}}}],
                "volumeMounts": [{"name": "notebook", "mountPath": "/notebook", "readOnly": True}],
            }],
            "volumes": [{"name": "notebook", "configMap": {"name": "notebook"}}],
        },
    })


def finished(kubectl, name):
    phase = kubectl.json("get", "pod", name, "-n", NAMESPACE)["status"].get("phase")
    if phase == "Failed":
        raise AssertionError(f"the notebook failed:\n{kubectl('logs', name, '-n', NAMESPACE)}")
    return phase == "Succeeded"


@pytest.mark.timeout(900)
def test_notebook_in_a_hub_user_pod_runs_with_gateway_and_no_arguments(kubectl, hub_deployment, worker_image):
    hub, gateway_url = hub_deployment
    # The gateway is the Hub's service, and the Hub's proxy routes to it.
    status, services = hub.api("GET", "/services")
    assert status == 200 and services[SERVICE]["url"] == gateway_url, services
    assert http("GET", f"{hub.public_url}{PREFIX}/api/health")[0] == 200

    # The recipe's environment: the chart's ConfigMap, nothing added by hand.
    env = kubectl.json("get", "configmap", f"{GATEWAY}-client", "-n", NAMESPACE)["data"]
    assert env["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == f"gateway://{GATEWAY}.{NAMESPACE}.svc.cluster.local:80"

    token = user_token(hub, "alice")
    kubectl("create", "secret", "generic", "alice-hub-token", "-n", NAMESPACE, f"--from-literal=token={token}")
    kubectl("create", "configmap", "notebook", "-n", NAMESPACE,
            f"--from-file=hub_notebook.py={ROOT / 'tests' / 'hub_notebook.py'}")
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=notebook_pod("jupyter-alice", worker_image, "alice-hub-token"))
    poll(lambda: finished(kubectl, "jupyter-alice"), 600, "the notebook pod to finish", interval=2)
    logs = kubectl("logs", "jupyter-alice", "-n", NAMESPACE).strip().splitlines()
    report = json.loads(logs[-1])
    print(f"\nGateway() to two workers Running (in the notebook pod): {report['seconds_to_two_workers']:.1f}s")

    assert report["address"] == env["DASK_GATEWAY__ADDRESS"] and report["proxy_address"] == env["DASK_GATEWAY__PROXY_ADDRESS"]
    # cluster_options() took the hub's default from the environment; the notebook chose small.
    assert report["default_profile"] == "medium" and report["profiles"] == ["small", "medium", "larger"]
    cluster = report["cluster"]
    # Two worker pods of that cluster answered client.run (their hostnames are the pod names).
    assert len(set(report["workers"])) == 2 and all(w.startswith(f"dask-{cluster}") for w in report["workers"]), report
    # The dashboard link goes through the Hub's proxy, and answered the notebook.
    assert report["dashboard_link"].startswith(f"{hub.public_url}{PREFIX}/clusters/{cluster}/")
    assert report["dashboard"] == [200, True]

    # The same cells in this process, without dask or a cluster.
    yearly, warm, point = seed_cells(daily_temperatures())
    assert report["yearly"] == pytest.approx(yearly.values.tolist())
    assert report["warm"] == pytest.approx(warm.values.tolist())
    assert report["point"] == pytest.approx(point.values.tolist()) and report["point_at"] == [15.0, 50.0]

    # shutdown() stopped the cluster: the gateway lists nothing running and its pods go.
    assert report["clusters_after_shutdown"] == []
    status, running = http("GET", f"{gateway_url}{PREFIX}/api/v1/clusters/", token, scheme="jupyterhub")
    assert status == 200 and running == {}, running
    poll(lambda: not kubectl.json("get", "pods", "-n", NAMESPACE, "-l", f"dask.org/cluster-name=dask-{cluster}")["items"],
         180, "the cluster's pods to go")


def test_a_token_with_the_service_scope_is_served(hub_deployment):
    hub, gateway_url = hub_deployment
    token = user_token(hub, "carol")
    status, me = hub.api("GET", "/user", token=token)
    assert status == 200 and f"access:services!service={SERVICE}" in me["scopes"], me
    status, body = http("GET", f"{gateway_url}{PREFIX}/api/v1/clusters/", token, scheme="jupyterhub")
    assert status == 200 and body == {}, body
    assert http("GET", f"{gateway_url}{PREFIX}/api/v1/clusters/", "not-a-token", scheme="jupyterhub")[0] == 401


# A Hub token reaches the gateway only if it carries the service's scope
# (access:services!service=<name>), JupyterHub's own rule for its services.
def test_a_users_token_passes_without_the_service_scope_and_an_unknown_one_is_refused(hub_deployment):
    """The chart's default, as dask-gateway-server: the Hub's word that a
    token is a user's is enough (a spawned server's own token has no
    access:services); the strict rule is tested in tests/gateway."""
    hub, gateway_url = hub_deployment
    token = user_token(hub, "bob", scopes=["read:users:name!user=bob"])
    status, me = hub.api("GET", "/user", token=token)
    assert status == 200 and not any(s.startswith("access:services") for s in me["scopes"]), me
    status, body = http("GET", f"{gateway_url}{PREFIX}/api/v1/clusters/", token, scheme="jupyterhub")
    assert status == 200, (status, body)
    status, body = http("GET", f"{gateway_url}{PREFIX}/api/v1/clusters/", "not-a-hub-token", scheme="jupyterhub")
    assert status == 401, (status, body)


# A profile for a dedicated node pool (the chart's per-profile pod keys):
# requests apart from limits, a nodeSelector and a toleration.
POOL_LABEL = ("dask-rs.test/pool", "dask")
POOL_TAINT = ("dask-rs.test/dedicated", "dask", "NoSchedule")
POOL_PROFILE = {
    "name": "pool", "workerCores": 0.25, "workerMemory": "256 MiB",
    "workerCoresLimit": 0.5, "workerMemoryLimit": "512 MiB",
    "nodeSelector": {POOL_LABEL[0]: POOL_LABEL[1]},
    "tolerations": [{"key": POOL_TAINT[0], "operator": "Equal", "value": POOL_TAINT[1], "effect": POOL_TAINT[2]}],
}


def chart_has_pod_keys():
    schema = json.loads((ROOT / "charts" / "dask-rs" / "values.schema.json").read_text())
    profile = schema["properties"]["gateway"]["properties"]["profiles"]["items"]["properties"]
    return all(key in profile for key in POOL_PROFILE)


def quantity(value):
    """A Kubernetes quantity as a number (cores or bytes)."""
    value = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def cluster_pods(kubectl, name, component):
    selector = f"dask.org/cluster-name=dask-{name},dask.org/component={component}"
    return kubectl.json("get", "pods", "-n", NAMESPACE, "-l", selector)["items"]


def running(pods):
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


@contextlib.contextmanager
def pool_node(kubectl):
    """The tier's node labelled and tainted as a dedicated pool; back as it was after."""
    node = kubectl.json("get", "nodes")["items"][0]["metadata"]["name"]
    key, value, effect = POOL_TAINT
    kubectl("label", "node", node, f"{POOL_LABEL[0]}={POOL_LABEL[1]}", "--overwrite")
    try:
        kubectl("taint", "node", node, f"{key}={value}:{effect}", "--overwrite")
        yield node
    finally:
        kubectl.run("taint", "node", node, f"{key}:{effect}-", check=False)
        kubectl.run("label", "node", node, f"{POOL_LABEL[0]}-", check=False)


@pytest.mark.timeout(600)
@pytest.mark.skipif(not chart_has_pod_keys(), reason="the chart has no profile pod keys yet (nodeSelector, tolerations, limits per profile)")
def test_a_pool_profile_lands_its_workers_on_the_pool_node_with_its_resources(kubectl, hub_deployment,
                                                                             chart_image_values, tmp_path):
    from dask_gateway import Gateway, JupyterHubAuth

    hub, gateway_url = hub_deployment
    profiles = [
        {"name": "small", "workerCores": 0.5, "workerMemory": "1 GiB"},
        {"name": "medium", "workerCores": 2, "workerMemory": "2 GiB"},
        {"name": "larger", "workerCores": 4, "workerMemory": "4 GiB"},
        POOL_PROFILE,
    ]
    values = tmp_path / "pool-values.json"
    values.write_text(json.dumps({"gateway": {"profiles": profiles}}))
    proc = subprocess.run(["helm", "upgrade", RELEASE, str(ROOT / "charts" / "dask-rs"), "--namespace", NAMESPACE,
                           "--reuse-values", "-f", str(values), *chart_image_values, "--wait", "--timeout", "180s"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"helm upgrade failed: {proc.stderr}"
    kubectl("rollout", "status", "-n", NAMESPACE, f"deployment/{GATEWAY}", "--timeout=120s")
    # Every old replica (without the pool profile) gone too, not only the new
    # ones ready: a terminating one still answers for a few seconds.
    replicas = kubectl.json("get", "deployment", GATEWAY, "-n", NAMESPACE)["spec"]["replicas"]
    poll(lambda: len(pods := kubectl.json("get", "pods", "-n", NAMESPACE, "-l",
                                          "app.kubernetes.io/component=gateway")["items"]) == replicas
         and not any(p["metadata"].get("deletionTimestamp") for p in pods), 120, "the old gateway replicas to go")
    # kube-proxy follows the new pod's endpoint a moment later.
    poll(lambda: reachable(f"{gateway_url}{PREFIX}/api/health"), 60, "the new gateway pod behind its Service")

    # The only node becomes the pool (the gateway, already running, stays).
    with pool_node(kubectl) as node:
        # The taint keeps out a pod that does not tolerate it.
        kubectl("run", "intruder", "-n", NAMESPACE, "--image=dask-rs.local/busybox:1", "--image-pull-policy=Never",
                "--restart=Never", "--command", "--", "sleep", "3600")
        poll(lambda: any(c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
                         for c in kubectl.json("get", "pod", "intruder", "-n", NAMESPACE)["status"].get("conditions", [])),
             60, "the untolerating pod to be unschedulable")
        kubectl("delete", "pod", "intruder", "-n", NAMESPACE, "--wait=false")

        service = kubectl.json("get", "service", GATEWAY, "-n", NAMESPACE)
        gateway = Gateway(f"{gateway_url}{PREFIX}", proxy_address=f"gateway://{service['spec']['clusterIP']}:80",
                          auth=JupyterHubAuth(user_token(hub, "dave")))
        assert "pool" in gateway.cluster_options()._fields["profile"].options
        cluster = gateway.new_cluster(profile="pool")
        try:
            cluster.scale(2)
            workers = poll(lambda: len(p := running(cluster_pods(kubectl, cluster.name, "worker"))) == 2 and p, 300,
                           "two pool workers Running")
            for pod in workers:
                spec = pod["spec"]
                assert spec["nodeName"] == node
                assert spec["nodeSelector"].get(POOL_LABEL[0]) == POOL_LABEL[1]
                assert POOL_PROFILE["tolerations"][0] in spec["tolerations"]
                resources = spec["containers"][0]["resources"]
                assert quantity(resources["requests"]["cpu"]) == 0.25 and quantity(resources["limits"]["cpu"]) == 0.5
                assert quantity(resources["requests"]["memory"]) == 256 * 2**20
                assert quantity(resources["limits"]["memory"]) == 512 * 2**20
                assert pod["status"]["qosClass"] == "Burstable"
            # The scheduler has the chart's default requests (gateway.backend.scheduler*), so it is never BestEffort.
            scheduler = poll(lambda: running(cluster_pods(kubectl, cluster.name, "scheduler")), 60, "the scheduler pod")[0]
            requests = scheduler["spec"]["containers"][0]["resources"]["requests"]
            assert quantity(requests["cpu"]) == 0.5 and quantity(requests["memory"]) == 2**30, requests
            assert scheduler["status"]["qosClass"] != "BestEffort"
            assert scheduler["spec"]["nodeName"] == node
        finally:
            cluster.shutdown()
            gateway.close()
        poll(lambda: not cluster_pods(kubectl, cluster.name, "worker")
             and not cluster_pods(kubectl, cluster.name, "scheduler"), 180, "every pod of the cluster to go")
