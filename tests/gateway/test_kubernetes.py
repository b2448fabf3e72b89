"""The Kubernetes backend against the real API server (`sim` tier, kwok
nodes) with the real operator: DaskClusters with the right spec, a Secret
owned by each, per-user listing, heartbeats scaling workers, a restart that
loses nothing, and stop."""

import re
import base64
import json
import time
import uuid

import pytest
from testlib import poll



@pytest.fixture
def k8s_gateway(start_gateway, namespace, operator):
    backend = (f'[backend]\ntype = "kubernetes"\nnamespace = "{namespace}"\nimage = "dask-rs/worker:test"\n'
               f'api_url = "http://dask-gateway.{namespace}:8000/api"\ninstance = "test-{namespace}"\nnetwork_policy = true\n')
    return lambda: start_gateway("[cluster]\nstart_timeout = 120\n", backend=backend)


def wait_for(check, what, timeout=60):
    return poll(check, timeout, what)


@pytest.mark.timeout(180)
def test_kubernetes_backend_lifecycle(kubectl, namespace, k8s_gateway):
    gw = k8s_gateway()
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {"cluster_options": {"profile": "small"}})
    assert status == 201
    name = body["name"]

    dc = kubectl.json("get", "daskcluster", f"dask-{name}", "-n", namespace)
    assert dc["metadata"]["labels"]["gateway.dask.org/cluster"] == name
    assert dc["metadata"]["annotations"]["gateway.dask.org/user"] == "alice"
    assert json.loads(dc["metadata"]["annotations"]["gateway.dask.org/options"]) == {"profile": "small"}
    scheduler = dc["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["args"][:4] == ["dask", "scheduler", "--protocol", "tls"]
    assert "dask_gateway.scheduler_preload" in scheduler["args"]
    env = {e["name"]: e.get("value") for e in scheduler["env"]}
    assert env["DASK_GATEWAY_CLUSTER_NAME"] == name and env["DASK_GATEWAY_API_TOKEN"] == "/etc/dask-credentials/api-token"
    worker = dc["spec"]["worker"]["spec"]["containers"][0]
    assert worker["resources"] == {"requests": {"cpu": "0.500", "memory": "1073741824"},
                                   "limits": {"cpu": "0.500", "memory": "1073741824"}}
    assert worker["args"][:3] == ["dask", "worker", f"tls://dask-{name}-scheduler.{namespace}.svc.cluster.local:8786"]

    secret = kubectl.json("get", "secret", f"dask-{name}-gateway", "-n", namespace)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == dc["metadata"]["uid"]
    token = base64.b64decode(secret["data"]["api-token"]).decode()

    # Only the scheduler gets the API token; no Dask pod gets a service-account token.
    pods = {role: dc["spec"][role]["spec"] for role in ("scheduler", "worker")}
    assert all(spec["automountServiceAccountToken"] is False for spec in pods.values())
    assert pods["scheduler"]["volumes"][0]["secret"]["secretName"] == f"dask-{name}-gateway"
    assert pods["worker"]["volumes"][0]["secret"]["secretName"] == f"dask-{name}-tls"
    assert "DASK_GATEWAY_API_TOKEN" not in {e["name"] for e in worker["env"]}
    tls = kubectl.json("get", "secret", f"dask-{name}-tls", "-n", namespace)
    assert sorted(tls["data"]) == ["dask.crt", "dask.pem"]
    assert tls["metadata"]["ownerReferences"][0]["uid"] == dc["metadata"]["uid"]
    # The cluster's pods may reach each other (the chart's policy admits the gateway).
    policy = kubectl.json("get", "networkpolicy", f"dask-{name}", "-n", namespace)
    own = {"matchLabels": {"dask.org/cluster-name": f"dask-{name}"}}
    assert policy["spec"]["podSelector"] == own and policy["spec"]["ingress"] == [{"from": [{"podSelector": own}]}]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == dc["metadata"]["uid"]

    # The operator and kwok make the scheduler ready: RUNNING, with credentials.
    cluster = wait_for(lambda: (c := gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice")[1])["status"] == "RUNNING" and c,
                       "the cluster to run", 90)
    assert cluster["tls_cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert re.fullmatch(rf"/clusters/{name}/~[0-9a-f]{{64}}/status", cluster["dashboard_route"])
    assert gw.request("GET", "/api/v1/clusters/", "bob")[1] == {}
    assert gw.request("GET", f"/api/v1/clusters/{name}", "bob")[0] == 403

    # A heartbeat asking for 2 workers scales the DaskCluster; the operator
    # makes pods with the small profile's resources.
    beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 2}
    assert gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", body=beat, headers={"Authorization": f"token {token}"})[0] == 200
    selector = f"dask.org/cluster-name=dask-{name},dask.org/component=worker"
    pods = wait_for(lambda: (p := kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]) and len(p) == 2 and p,
                    "two worker pods")
    for pod in pods:
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert not any(v.get("projected") for v in pod["spec"].get("volumes", [])), "a service-account token is mounted"
        resources = pod["spec"]["containers"][0]["resources"]
        assert resources["requests"]["cpu"] == "500m" and resources["limits"]["memory"] in ("1073741824", "1Gi")

    # A restarted gateway has lost nothing: the state is in Kubernetes.
    gw.stop()
    gw.start()
    restarted = gw.request("GET", "/api/v1/clusters/", "alice")[1]
    assert list(restarted) == [name] and restarted[name]["status"] == "RUNNING"
    assert restarted[name]["tls_cert"] == cluster["tls_cert"]

    # A running cluster's logs come from its pods (kwok serves no log
    # content: every pod is listed, with no lines).
    worker_pods = sorted(p["metadata"]["name"] for p in pods)
    status, logs, _ = gw.request("GET", f"/api/v1/clusters/{name}/logs", "alice")
    assert status == 200 and sorted(logs["workers"]) == worker_pods and logs["status"] == "RUNNING", logs
    assert gw.request("GET", f"/api/v1/clusters/{name}/logs", "bob")[0] == 403

    assert gw.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    wait_for(lambda: kubectl.run("get", "daskcluster", f"dask-{name}", "-n", namespace, check=False).returncode != 0,
             "the DaskCluster to be deleted")
    wait_for(lambda: gw.request("GET", "/api/v1/clusters/", "alice")[1] == {}, "the cluster to leave the list")
    wait_for(lambda: not kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"], "the worker pods to go")
    # It stays in the history: a small record (its Secret, key and token
    # removed, owned by nothing), and its pods' logs captured beside it.
    stopped = gw.request("GET", "/api/v1/clusters/?status=STOPPED", "alice")[1]
    assert stopped[name]["status"] == "STOPPED" and stopped[name]["stop_time"] >= stopped[name]["start_time"]
    record = kubectl.json("get", "secret", f"dask-{name}-gateway", "-n", namespace)
    assert record["metadata"]["labels"]["gateway.dask.org/record"] == "stopped"
    assert "ownerReferences" not in record["metadata"] and sorted(record.get("data", {})) == ["dask.crt"]
    captured = kubectl.json("get", "secret", f"dask-{name}-logs", "-n", namespace)
    assert captured["metadata"]["ownerReferences"][0]["uid"] == record["metadata"]["uid"]
    status, logs, _ = gw.request("GET", f"/api/v1/clusters/{name}/logs", "alice")
    assert status == 200 and logs["status"] == "STOPPED" and sorted(logs["workers"]) == worker_pods, logs


def k8s_backend(namespace):
    return (f'[backend]\ntype = "kubernetes"\nnamespace = "{namespace}"\nimage = "dask-rs/worker:test"\n'
            f'api_url = "http://dask-gateway.{namespace}:8000/api"\ninstance = "test-{namespace}"\n')


@pytest.mark.timeout(240)
def test_parallel_creates_on_two_replicas_give_exactly_one_cluster(kubectl, namespace, operator, start_gateway):
    config = "[limits]\nuser_max_clusters = 1\n[cluster]\nstart_timeout = 120\n"
    replicas = [start_gateway(config, backend=k8s_backend(namespace)) for _ in range(2)]
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: replicas[i % 2].request("POST", "/api/v1/clusters/", "alice", {}), range(20)))
    statuses = sorted(a[0] for a in answers)
    assert statuses == [201] + [409] * 19, [a[:2] for a in answers]
    assert len(kubectl.json("get", "daskclusters", "-n", namespace)["items"]) == 1
    slots = kubectl.json("get", "leases", "-n", namespace)["items"]
    assert len(slots) == 1 and slots[0]["metadata"]["ownerReferences"][0]["kind"] == "DaskCluster"
    # Another user has slots of their own; a stopped cluster frees its slot.
    assert replicas[1].request("POST", "/api/v1/clusters/", "bob", {})[0] == 201
    name = next(a[1]["name"] for a in answers if a[0] == 201)
    assert replicas[0].request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    wait_for(lambda: replicas[1].request("POST", "/api/v1/clusters/", "alice", {})[0] == 201,
             "a create after the stop", 60)


@pytest.mark.timeout(120)
def test_a_session_made_on_one_replica_is_valid_on_the_other(kubectl, namespace, operator, start_gateway, tmp_path):
    secret = tmp_path / "cookie-secret"
    secret.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    config = f'[auth]\ncookie_secret_file = "{secret}"\n[cluster]\nstart_timeout = 120\n'
    one, other = (start_gateway(config, backend=k8s_backend(namespace)) for _ in range(2))
    alone = start_gateway("[cluster]\nstart_timeout = 120\n", backend=k8s_backend(namespace))
    status, body, headers = one.request("POST", "/api/v1/clusters/", "alice", {})
    assert status == 201
    cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}
    # No credentials, only the cookie the first replica gave: the other knows alice.
    status, listed, _ = other.request("GET", "/api/v1/clusters/", headers=cookie)
    assert status == 200 and list(listed) == [body["name"]]
    assert other.request("DELETE", f"/api/v1/clusters/{body['name']}", headers=cookie)[0] == 204
    # A gateway without the shared key does not.
    assert alone.request("GET", "/api/v1/clusters/", headers=cookie)[0] == 401


@pytest.mark.timeout(240)
def test_a_failed_cluster_loses_its_pods_and_heartbeats(kubectl, namespace, k8s_gateway):
    gw = k8s_gateway()
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {})
    name = body["name"]
    wait_for(lambda: gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice")[1]["status"] == "RUNNING",
             "the cluster to run", 90)
    secret = kubectl.json("get", "secret", f"dask-{name}-gateway", "-n", namespace)
    token = base64.b64decode(secret["data"]["api-token"]).decode()
    beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 2}
    headers = {"Authorization": f"token {token}"}
    assert gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", body=beat, headers=headers)[0] == 200
    selector = f"dask.org/cluster-name=dask-{name}"
    wait_for(lambda: len(kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]) >= 3,
             "the scheduler and two workers")
    # A heartbeat past every limit is clamped (default cluster_max_workers 32, no i32 overflow).
    assert gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", body={**beat, "count": 2**32 - 1}, headers=headers)[0] == 200
    wait_for(lambda: kubectl.json("get", "daskcluster", f"dask-{name}", "-n", namespace)["spec"]["worker"]["replicas"] == 32,
             "replicas clamped to 32")

    # The scheduler's API is unreachable from here: the scale order fails and
    # the cluster is FAILED; its DaskCluster, scheduler and workers go, the
    # record stays (without the key and token), and heartbeats are refused.
    status, body, _ = gw.request("POST", f"/api/v1/clusters/{name}/scale", "alice", {"count": 1})
    assert status == 409, body
    wait_for(lambda: kubectl.run("get", "daskcluster", f"dask-{name}", "-n", namespace, check=False).returncode != 0,
             "the failed DaskCluster to be deleted")
    wait_for(lambda: not kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"], "the pods to go", 90)
    record = kubectl.json("get", "secret", f"dask-{name}-gateway", "-n", namespace)
    assert "api-token" not in record.get("data", {}) and "dask.pem" not in record.get("data", {})
    cluster = wait_for(lambda: (c := gw.request("GET", f"/api/v1/clusters/{name}", "alice")[1])["status"] == "FAILED" and c,
                       "the FAILED record")
    assert cluster["tls_key"] is None
    assert name in gw.request("GET", "/api/v1/clusters/?status=FAILED", "alice")[1]
    status, _, _ = gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", body=beat, headers=headers)
    assert 400 <= status < 500
    # Its logs say why it failed; stopping it again leaves the record in the history.
    status, logs, _ = gw.request("GET", f"/api/v1/clusters/{name}/logs", "alice")
    assert status == 200 and logs["status"] == "FAILED" and logs["reason"], logs
    assert gw.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    assert gw.request("GET", f"/api/v1/clusters/{name}", "alice")[1]["status"] == "FAILED"
    assert kubectl.run("get", "secret", f"dask-{name}-gateway", "-n", namespace, check=False).returncode == 0


@pytest.mark.timeout(120)
def test_a_kubernetes_refusal_is_a_clear_error_without_the_api_text(kubectl, namespace, k8s_gateway):
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-clusters"},
             "spec": {"hard": {"count/daskclusters.kubernetes.dask.org": "0"}}}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(quota))
    wait_for(lambda: kubectl.json("get", "resourcequota", "no-clusters", "-n", namespace).get("status", {}).get("hard"),
             "the quota to be in force")
    gw = k8s_gateway()
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {})
    assert status == 503, (status, body)
    assert "quota" in body["error"] and "exceeded" not in body["error"] and "kubernetes.dask.org" not in body["error"], body
    assert kubectl.json("get", "daskclusters", "-n", namespace)["items"] == []


@pytest.mark.timeout(240)
def test_finished_clusters_stay_listed_across_replicas_and_restarts_then_go(kubectl, namespace, operator, start_gateway):
    # Two replicas sharing the API server; records older than 20 s are dropped.
    config = "[cluster]\nstart_timeout = 120\ncompleted_cluster_max_age = 20\n"
    replicas = [start_gateway(config, backend=k8s_backend(namespace)) for _ in range(2)]
    first, second = replicas
    name = first.request("POST", "/api/v1/clusters/", "alice", {})[1]["name"]
    wait_for(lambda: first.request("GET", f"/api/v1/clusters/{name}?wait", "alice")[1]["status"] == "RUNNING",
             "the cluster to run", 90)
    assert first.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    wait_for(lambda: kubectl.run("get", "daskcluster", f"dask-{name}", "-n", namespace, check=False).returncode != 0,
             "the DaskCluster to be deleted")
    # The other replica lists it too, and so does a restarted one: the record is in Kubernetes.
    wait_for(lambda: name in second.request("GET", "/api/v1/clusters/?status=STOPPED", "alice")[1],
             "the second replica to list the stopped cluster")
    second.stop()
    second.start()
    report = second.request("GET", f"/api/v1/clusters/{name}", "alice")[1]
    assert report["status"] == "STOPPED" and report["tls_key"] is None
    assert second.request("GET", "/api/v1/clusters/?status=STOPPED", "bob")[1] == {}
    # After the max age, gone from both replicas and from Kubernetes, captured logs included.
    wait_for(lambda: all(r.request("GET", "/api/v1/clusters/?status=STOPPED,FAILED", "alice")[1] == {} for r in replicas),
             "the record to be dropped", 60)
    assert first.request("GET", f"/api/v1/clusters/{name}/logs", "alice")[0] == 404
    wait_for(lambda: all(kubectl.run("get", "secret", s, "-n", namespace, check=False).returncode != 0
                         for s in (f"dask-{name}-gateway", f"dask-{name}-logs")),
             "the record and its logs Secret to be deleted", 60)


@pytest.mark.timeout(180)
def test_a_forgotten_cluster_is_stopped_on_kubernetes(kubectl, namespace, operator, start_gateway):
    gw = start_gateway("[cluster]\nstart_timeout = 120\nidle_client_timeout = 3\n", backend=k8s_backend(namespace))
    created = time.monotonic()
    name = gw.request("POST", "/api/v1/clusters/", "alice", {})[1]["name"]
    args = kubectl.json("get", "daskcluster", f"dask-{name}", "-n", namespace)["spec"]["scheduler"]["spec"]["containers"][0]["args"]
    # The presence preload goes as its text, after dask-gateway's preload whose heartbeat it extends.
    preloads = [args[i + 1] for i, arg in enumerate(args) if arg == "--preload"]
    assert preloads[0] == "dask_gateway.scheduler_preload" and "clientless_seconds" in preloads[1]
    wait_for(lambda: gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice")[1]["status"] == "RUNNING",
             "the cluster to run", 90)
    secret = kubectl.json("get", "secret", f"dask-{name}-gateway", "-n", namespace)
    headers = {"Authorization": f"token {base64.b64decode(secret['data']['api-token']).decode()}"}
    beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 0}
    # kwok runs no scheduler: these are the heartbeats its preload would send.
    for clients, alone in [(1, 0.0), (0, 2.0)]:
        assert gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", headers=headers,
                          body={**beat, "clients": clients, "clientless_seconds": alone})[0] == 200
        assert kubectl.run("get", "daskcluster", f"dask-{name}", "-n", namespace, check=False).returncode == 0
    # Alone for longer than the timeout, and the cluster's own age too (the
    # gateway does not count time before the cluster was created).
    time.sleep(max(0.0, created + 4 - time.monotonic()))
    assert gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", headers=headers,
                      body={**beat, "clients": 0, "clientless_seconds": 4.0})[0] == 200
    wait_for(lambda: kubectl.run("get", "daskcluster", f"dask-{name}", "-n", namespace, check=False).returncode != 0,
             "the forgotten cluster's DaskCluster to be deleted")
