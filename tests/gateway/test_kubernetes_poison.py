"""A DaskCluster that the API server accepts but that does not read as one
(its pod spec is open in the CRD), carrying the gateway's labels, stalls
nothing: the gateway starts, lists, creates, scales and stops the others,
and logs the unreadable one once (`sim` tier, with the real operator)."""

import base64
import json

import pytest
from testlib import poll


def poison(namespace, name):
    """A DaskCluster in the gateway's watch whose worker `ports` is no list."""
    worker = {"containers": [{"name": "w", "image": "x", "ports": "oops"}]}
    scheduler = {"containers": [{"name": "s", "image": "x"}]}
    return json.dumps({
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"gateway.dask.org/instance": f"test-{namespace}", "gateway.dask.org/cluster": name}},
        "spec": {"worker": {"replicas": 1, "spec": worker}, "scheduler": {"spec": scheduler, "service": {}}},
    })


@pytest.mark.timeout(240)
def test_an_unreadable_daskcluster_stalls_nothing(kubectl, namespace, operator, start_gateway):
    # There before the gateway starts (its first list) and made while it runs (its watch).
    kubectl("apply", "-f", "-", input=poison(namespace, "poison"))
    backend = (f'[backend]\ntype = "kubernetes"\nnamespace = "{namespace}"\nimage = "dask-rs/worker:test"\n'
               f'api_url = "http://dask-gateway.{namespace}:8000/api"\ninstance = "test-{namespace}"\n')
    gw = start_gateway("[cluster]\nstart_timeout = 120\n", backend=backend)
    kubectl("apply", "-f", "-", input=poison(namespace, "poison-late"))

    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {})
    assert status == 201, body
    name = body["name"]
    poll(lambda: gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice")[1]["status"] == "RUNNING",
         90, "the cluster to run")
    assert list(gw.request("GET", "/api/v1/clusters/", "alice")[1]) == [name]

    # Scaled by its scheduler's heartbeat, as the gateway scales every cluster.
    secret = kubectl.json("get", "secret", f"dask-{name}-gateway", "-n", namespace)
    token = base64.b64decode(secret["data"]["api-token"]).decode()
    beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 2}
    headers = {"Authorization": f"token {token}"}
    assert gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", body=beat, headers=headers)[0] == 200
    selector = f"dask.org/cluster-name=dask-{name},dask.org/component=worker"
    poll(lambda: len(kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]) == 2, 60, "two workers")

    assert gw.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    poll(lambda: gw.request("GET", "/api/v1/clusters/", "alice")[1] == {}, 60, "the cluster to leave the list")
    status, health, _ = gw.request("GET", "/api/health")
    assert status == 200 and health == {"status": "pass"}

    # Each unreadable one is logged once, though the operator's status write
    # on it shows it to the watch again.
    log = gw.log_path.read_text()
    for bad in ("poison", "poison-late"):
        lines = [line for line in log.splitlines() if "cannot be read" in line and f"daskcluster={bad} " in line]
        assert len(lines) == 1, lines
        assert "spec.worker.spec.containers[0].ports" in lines[0]
