"""Two gateway replicas behind one Service (the chart's default), no sticky
sessions: the notebook flow goes on while one replica is deleted in the
middle of it. The client's next call, a new `get_client()` and the
computation all work through the replica left (a node drain or an upgrade
must not interrupt users)."""

import time
import urllib.request

import dask.array as da
import pytest
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from testlib import poll

from test_gateway import chart_password, cluster_pods, running, service_address


def ready_gateways(kubectl, ns):
    pods = kubectl.json("get", "pods", "-n", ns, "-l", "app.kubernetes.io/component=gateway")["items"]
    return [p["metadata"]["name"] for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


@pytest.mark.timeout(600)
def test_the_notebook_flow_survives_losing_a_replica(kubectl, release):
    ns = release
    poll(lambda: len(ready_gateways(kubectl, ns)) == 2, 180, "two gateway replicas Ready")
    pdb = kubectl.json("get", "pdb", "dr-dask-rs-gateway", "-n", ns)
    assert pdb["spec"]["minAvailable"] == 1
    gateway = Gateway(service_address(kubectl, ns), auth=BasicAuth("alice", chart_password(kubectl, ns)))
    t0 = time.monotonic()
    timeline = []

    def mark(what):
        timeline.append(f"{time.monotonic() - t0:6.1f}s {what}")

    cluster = gateway.new_cluster(profile="small")
    try:
        cluster.scale(2)
        poll(lambda: len(running(cluster_pods(kubectl, ns, cluster.name, "worker"))) == 2, 300, "two workers Running")
        client = cluster.get_client()
        client.wait_for_workers(2, timeout=120)
        assert da.arange(1000, chunks=100).sum().compute() == 499_500
        mark("two workers, computed")

        victim = ready_gateways(kubectl, ns)[0]
        kubectl("delete", "pod", victim, "-n", ns, "--wait=false")
        mark(f"replica {victim} deleted")
        # The client's next calls, whichever replica the Service picks.
        assert [c.name for c in gateway.list_clusters()] == [cluster.name]
        mark("list_clusters answered")
        cluster.scale(1)
        poll(lambda: len(cluster_pods(kubectl, ns, cluster.name, "worker")) == 1, 180, "one worker pod left")
        mark("scaled to 1")
        again = gateway.connect(cluster.name)
        fresh = again.get_client()
        fresh.wait_for_workers(1, timeout=120)
        assert da.arange(1_000_000, chunks=100_000).mean().compute() == pytest.approx(499_999.5)
        mark("new get_client() computed")
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as resp:
            assert resp.status == 200
        mark("dashboard answered")
        poll(lambda: len(ready_gateways(kubectl, ns)) == 2, 180, "the Deployment to replace the replica")
        mark("two replicas Ready again")
        fresh.close()
        client.close()
    finally:
        cluster.shutdown()
    print("\nreplica-kill timeline:\n  " + "\n  ".join(timeline))
    poll(lambda: not cluster_pods(kubectl, ns, cluster.name, "worker") and not cluster_pods(kubectl, ns, cluster.name, "scheduler"),
         180, "every pod of the cluster to go")
    gateway.close()
