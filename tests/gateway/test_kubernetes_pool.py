"""The Kubernetes backend's warm pool against the real API server (`sim`
tier, kwok nodes) with the real operator: pooled DaskClusters that no user
sees, claimed RUNNING at once with the user's metadata, refilled, cold
starts for options no pool serves, and two gateway replicas that never hand
out the same pooled cluster."""

import base64
import concurrent.futures
import json

import pytest
from gatewaylib import ENVIRONMENT_OPTION, cluster_starts, metric_values
from testlib import poll

POOL = "gateway.dask.org/pool"
USER = "gateway.dask.org/user"


def backend(namespace, pool_size):
    return (f'[backend]\ntype = "kubernetes"\nnamespace = "{namespace}"\nimage = "dask-rs/worker:test"\n'
            f'api_url = "http://dask-gateway.{namespace}:8000/api"\ninstance = "test-{namespace}"\n'
            f'pool_size = {pool_size}\n')


def daskclusters(kubectl, namespace):
    return kubectl.json("get", "daskclusters", "-n", namespace)["items"]


def ready_members(kubectl, namespace):
    return [dc for dc in daskclusters(kubectl, namespace)
            if POOL in dc["metadata"].get("labels", {}) and dc.get("status", {}).get("phase") == "Running"
            and not dc["metadata"].get("deletionTimestamp")]


def wait_for_members(kubectl, namespace, gw, n):
    # Running in the API server, and in the gateway's cache (its metric).
    poll(lambda: len(ready_members(kubectl, namespace)) >= n
         and metric_values(gw)['dask_gateway_pool_schedulers{status="running"}'] >= n,
         120, f"{n} ready pooled clusters")


@pytest.mark.timeout(300)
def test_a_pooled_cluster_is_claimed_running_with_the_users_metadata_and_the_pool_refills(kubectl, namespace, operator, start_gateway):
    config = f'[auth]\nadmins = ["root"]\n[cluster]\nstart_timeout = 120\n{ENVIRONMENT_OPTION}'
    gw = start_gateway(config, backend=backend(namespace, 1))
    wait_for_members(kubectl, namespace, gw, 1)
    [member] = ready_members(kubectl, namespace)
    meta = member["metadata"]
    name = meta["labels"]["gateway.dask.org/cluster"]
    assert meta["annotations"][USER] == ""
    # Unseen by users and admins, in the list and the history, and not theirs to get.
    for user in ("alice", "root"):
        assert gw.request("GET", "/api/v1/clusters/?status=PENDING,RUNNING,STOPPING,STOPPED,FAILED", user)[1] == {}
    assert gw.request("GET", f"/api/v1/clusters/{name}", "root")[0] == 404
    selector = f"dask.org/cluster-name=dask-{name},dask.org/component=scheduler"
    [scheduler_pod] = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]

    # A create with the pooled profile's options gets it, RUNNING at once.
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {"cluster_options": {"profile": "small"}})
    assert status == 201 and body["name"] == name, body
    report = gw.request("GET", f"/api/v1/clusters/{name}", "alice")[1]
    assert report["status"] == "RUNNING" and report["tls_cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert list(gw.request("GET", "/api/v1/clusters/", "alice")[1]) == [name]
    assert gw.request("GET", f"/api/v1/clusters/{name}", "bob")[0] == 403
    assert cluster_starts(gw, "pool") == 1 and cluster_starts(gw, "cold") == 0

    # The claimed DaskCluster is alice's, out of the pool.
    dc = kubectl.json("get", "daskcluster", f"dask-{name}", "-n", namespace)
    assert POOL not in dc["metadata"]["labels"]
    assert dc["metadata"]["annotations"][USER] == "alice"
    assert json.loads(dc["metadata"]["annotations"]["gateway.dask.org/options"]) == {"profile": "small", "environment": {}}
    assert int(dc["metadata"]["annotations"]["gateway.dask.org/claimed"]) >= report["start_time"] - 1
    # The operator passes alice's metadata to the worker group; the ready
    # scheduler is not rolled for it (its pod keeps the pool's metadata).
    poll(lambda: kubectl.json("get", "daskworkergroup", f"dask-{name}-default", "-n", namespace)
         ["metadata"]["annotations"].get(USER) == "alice", 60, "the worker group to be alice's")
    deployment = kubectl.json("get", "deployment", f"dask-{name}-scheduler", "-n", namespace)
    assert deployment["metadata"]["generation"] == 1, "the scheduler was rolled by the claim"
    [still] = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    assert still["metadata"]["uid"] == scheduler_pod["metadata"]["uid"]
    assert still["metadata"]["annotations"][USER] == ""

    # Workers made after the claim carry alice's metadata, as a cold cluster's do.
    secret = kubectl.json("get", "secret", f"dask-{name}-gateway", "-n", namespace)
    token = base64.b64decode(secret["data"]["api-token"]).decode()
    beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 1}
    assert gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", body=beat,
                      headers={"Authorization": f"token {token}"})[0] == 200
    workers = f"dask.org/cluster-name=dask-{name},dask.org/component=worker"
    [worker] = poll(lambda: kubectl.json("get", "pods", "-n", namespace, "-l", workers)["items"], 60, "a worker pod")
    assert worker["metadata"]["annotations"][USER] == "alice" and POOL not in worker["metadata"]["labels"]

    # The pool refills with a cluster of its own.
    poll(lambda: [m for m in ready_members(kubectl, namespace) if m["metadata"]["name"] != f"dask-{name}"],
         120, "a new pooled cluster")

    # Options no pool serves start cold, and are counted so.
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice",
                                 {"cluster_options": {"profile": "small", "environment": {"A": "1"}}})
    assert status == 201
    cold = kubectl.json("get", "daskcluster", f"dask-{body['name']}", "-n", namespace)
    assert POOL not in cold["metadata"]["labels"] and cold["metadata"]["annotations"][USER] == "alice"
    status, body2, _ = gw.request("POST", "/api/v1/clusters/", "alice", {"cluster_options": {"profile": "medium"}})
    assert status == 201 and POOL not in kubectl.json("get", "daskcluster", f"dask-{body2['name']}", "-n", namespace)["metadata"]["labels"]
    assert cluster_starts(gw, "pool") == 1 and cluster_starts(gw, "cold") == 2
    assert sorted(gw.request("GET", "/api/v1/clusters/", "root")[1]) == sorted([name, body["name"], body2["name"]])

    # A stopped claimed cluster is in alice's history; no pooled one ever is.
    assert gw.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    poll(lambda: gw.request("GET", "/api/v1/clusters/?status=STOPPED", "alice")[1].get(name, {}).get("status") == "STOPPED",
         60, "the stopped cluster in the history")
    history = gw.request("GET", "/api/v1/clusters/?status=PENDING,RUNNING,STOPPING,STOPPED,FAILED", "root")[1]
    assert sorted(history) == sorted([name, body["name"], body2["name"]])


@pytest.mark.timeout(300)
def test_two_replicas_never_hand_out_the_same_pooled_cluster(kubectl, namespace, operator, start_gateway):
    config = "[limits]\nuser_max_clusters = 1\n[cluster]\nstart_timeout = 120\n"
    replicas = [start_gateway(config, backend=backend(namespace, 2)) for _ in range(2)]
    for gw in replicas:
        wait_for_members(kubectl, namespace, gw, 2)
    users = [f"user{i}" for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: replicas[i % 2].request("POST", "/api/v1/clusters/", users[i], {}), range(10)))
    assert [a[0] for a in answers] == [201] * 10, [a[:2] for a in answers]
    names = [a[1]["name"] for a in answers]
    assert len(set(names)) == 10, names
    # Each DaskCluster has exactly the one owner that got its name.
    for user, name in zip(users, names):
        dc = kubectl.json("get", "daskcluster", f"dask-{name}", "-n", namespace)
        assert dc["metadata"]["annotations"][USER] == user and POOL not in dc["metadata"]["labels"]
    pooled = sum(cluster_starts(gw, "pool") for gw in replicas)
    assert 1 <= pooled <= 10 and pooled + sum(cluster_starts(gw, "cold") for gw in replicas) == 10
    # A claim takes a slot as a cold start does: held by the cluster, owned by it.
    slots = kubectl.json("get", "leases", "-n", namespace)["items"]
    assert sorted(s["spec"]["holderIdentity"] for s in slots) == sorted(names)
    assert all(s["metadata"]["ownerReferences"][0]["kind"] == "DaskCluster" for s in slots)
    assert replicas[0].request("POST", "/api/v1/clusters/", "user0", {})[0] == 409
    # The replicas refill the pool together (a small overshoot is allowed).
    poll(lambda: len(ready_members(kubectl, namespace)) >= 2, 120, "the pool refilled")
    assert len([dc for dc in daskclusters(kubectl, namespace) if POOL in dc["metadata"]["labels"]]) <= 4


PULL_ERROR = 'rpc error: code = NotFound desc = failed to pull and unpack image "dask-rs/worker:test": not found'


@pytest.mark.timeout(300)
def test_a_failed_pooled_cluster_is_replaced_without_a_record_and_a_restart_reuses_the_pool(kubectl, namespace, operator, start_gateway):
    gw = start_gateway('[auth]\nadmins = ["root"]\n[cluster]\nstart_timeout = 120\n', backend=backend(namespace, 1))
    wait_for_members(kubectl, namespace, gw, 1)
    [member] = ready_members(kubectl, namespace)
    name = member["metadata"]["labels"]["gateway.dask.org/cluster"]

    # A restarted gateway counts the pool in the API server: it makes no other member.
    gw.stop()
    gw.start()
    wait_for_members(kubectl, namespace, gw, 1)
    assert [m["metadata"]["name"] for m in daskclusters(kubectl, namespace)] == [f"dask-{name}"]

    # kwok runs no containers: tell the API server, as a kubelet would, that
    # the scheduler's image cannot be pulled. The operator says Failed.
    [pod] = kubectl.json("get", "pods", "-n", namespace, "-l", f"dask.org/cluster-name=dask-{name},dask.org/component=scheduler")["items"]
    status = {"status": {
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
        "containerStatuses": [{"name": "scheduler", "imageID": "", "ready": False, "image": "dask-rs/worker:test",
                               "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": PULL_ERROR}}}]}}
    kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status", "--type=strategic",
            "-p", json.dumps(status))
    # The gateway deletes it, with its Secrets and no history record, and makes another.
    poll(lambda: kubectl.run("get", "daskcluster", f"dask-{name}", "-n", namespace, check=False).returncode != 0,
         120, "the failed pooled cluster to be deleted")
    poll(lambda: kubectl.run("get", "secret", f"dask-{name}-gateway", "-n", namespace, check=False).returncode != 0,
         60, "its Secret to go with it")
    poll(lambda: [m for m in ready_members(kubectl, namespace) if m["metadata"]["name"] != f"dask-{name}"],
         120, "a replacement")
    assert gw.request("GET", "/api/v1/clusters/?status=PENDING,RUNNING,STOPPING,STOPPED,FAILED", "root")[1] == {}
    assert "a pooled cluster failed; replacing it" in gw.log_path.read_text()
