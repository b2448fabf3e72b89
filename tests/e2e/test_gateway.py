"""The notebook flow through the gateway installed by the chart, on real
pods: the real dask-gateway client, via the gateway's Service, gets a small
cluster, scales it to two worker pods, computes, opens the dashboard, and
shutdown removes every pod."""

import base64
import time
import urllib.error
import urllib.request

import dask.array as da
import pytest
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from testlib import poll


def cluster_pods(kubectl, ns, name, component):
    selector = f"dask.org/cluster-name=dask-{name},dask.org/component={component}"
    return kubectl.json("get", "pods", "-n", ns, "-l", selector)["items"]


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def service_address(kubectl, ns):
    """The gateway Service's address, once it answers (kube-proxy programs a
    new Service a moment after its pods are ready)."""
    service = kubectl.json("get", "service", "dr-dask-rs-gateway", "-n", ns)
    address = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    poll(lambda: answers(address + "/api/health"), 60, "the gateway Service to answer")
    return address


def chart_password(kubectl, ns):
    """The chart's default: simple auth with a generated shared password."""
    secret = kubectl.json("get", "secret", "dr-dask-rs-gateway-password", "-n", ns)
    return base64.b64decode(secret["data"]["password"]).decode()


def running(pods):
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


@pytest.mark.timeout(600)
def test_notebook_flow_through_the_gateway(kubectl, release):
    ns = release
    address = service_address(kubectl, ns)
    password = chart_password(kubectl, ns)
    denied = urllib.request.Request(address + "/api/v1/options", headers={"Authorization": "Basic YWxpY2U6"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(denied, timeout=10)
    assert refused.value.code == 401
    gateway = Gateway(address, auth=BasicAuth("alice", password))

    opts = gateway.cluster_options()
    assert list(opts._fields["profile"].options) == ["small", "medium", "larger"]
    start = time.monotonic()
    cluster = gateway.new_cluster(profile="small")
    try:
        started = time.monotonic() - start
        cluster.scale(2)
        workers = poll(lambda: len(p := running(cluster_pods(kubectl, ns, cluster.name, "worker"))) == 2 and p, 300,
                       "two worker pods Running")
        print(f"\nnew_cluster: {started:.1f}s; new_cluster to two workers Running: {time.monotonic() - start:.1f}s")
        for pod in workers:
            resources = pod["spec"]["containers"][0]["resources"]
            assert resources["requests"]["cpu"] == "500m" and resources["limits"]["cpu"] == "500m"
            assert resources["limits"]["memory"] in ("1Gi", "1073741824")

        client = cluster.get_client()
        client.wait_for_workers(2, timeout=120)
        assert {w["nthreads"] for w in client.scheduler_info()["workers"].values()} == {1}
        assert da.arange(1_000_000, chunks=100_000).mean().compute() == pytest.approx(499_999.5)

        # Workers (user code) hold the TLS pair alone: no gateway API token, no
        # service-account token; the scheduler has its API token.
        def credentials():
            import os
            return (sorted(f for f in os.listdir("/etc/dask-credentials") if not f.startswith("..")),
                    os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"))
        on_workers = [tuple(found) for found in client.run(credentials).values()]
        assert on_workers == [(["dask.crt", "dask.pem"], False)] * 2, on_workers
        assert tuple(client.run_on_scheduler(credentials)) == (["api-token", "dask.crt", "dask.pem"], False)

        # Scale-down: the scheduler retires one worker; exactly one pod stays.
        cluster.scale(1)
        poll(lambda: len(client.scheduler_info()["workers"]) == 1, 120, "the scheduler to retire a worker")
        poll(lambda: len(running(cluster_pods(kubectl, ns, cluster.name, "worker"))) == 1
             and len(cluster_pods(kubectl, ns, cluster.name, "worker")) == 1, 120, "one worker pod left")
        assert len(client.scheduler_info()["workers"]) == 1
        assert da.arange(1000, chunks=100).sum().compute() == 499_500

        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as resp:
            assert resp.status == 200
        assert [c.name for c in gateway.list_clusters()] == [cluster.name]
        client.close()
    finally:
        cluster.shutdown()
    poll(lambda: not cluster_pods(kubectl, ns, cluster.name, "worker") and not cluster_pods(kubectl, ns, cluster.name, "scheduler"),
         180, "every pod of the cluster to go")
    assert gateway.list_clusters() == []
    gateway.close()


def gateway_logs(address, password, name, user="alice", query=""):
    """(status, JSON) of GET /api/v1/clusters/<name>/logs."""
    import json
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"{address}/api/v1/clusters/{name}/logs{query}",
                                     headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


KILL_WORKER = ("import os, signal\n"
               "for p in os.listdir('/proc'):\n"
               "    if p.isdigit() and int(p) not in (1, os.getpid()) and b'worker' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
               "        os.kill(int(p), signal.SIGKILL)\n")


@pytest.mark.timeout(600)
def test_cluster_logs_through_the_gateway_on_real_pods(kubectl, release):
    """The logs route reads the pods' logs (a restarted worker's previous
    container included), and a stopped cluster keeps its captured logs in
    its history record while its pods go."""
    ns = release
    address = service_address(kubectl, ns)
    password = chart_password(kubectl, ns)
    gateway = Gateway(address, auth=BasicAuth("alice", password))
    cluster = gateway.new_cluster(profile="small")
    name = cluster.name
    try:
        cluster.scale(1)
        client = cluster.get_client()
        client.wait_for_workers(1, timeout=300)
        pod = poll(lambda: (p := running(cluster_pods(kubectl, ns, name, "worker"))) and p[0]["metadata"]["name"], 60,
                   "the worker pod")
        status, logs = gateway_logs(address, password, name)
        assert status == 200 and logs["status"] == "RUNNING", logs
        assert any("Scheduler at" in line for line in logs["scheduler"]), logs["scheduler"]
        assert any("Registered to" in line for line in logs["workers"][pod]), logs["workers"]
        status, few = gateway_logs(address, password, name, query="?lines=2")
        assert len(few["scheduler"]) == 2 and all(len(lines) <= 2 for lines in few["workers"].values())
        assert gateway_logs(address, password, name, user="bob")[0] == 403

        # A worker killed in its container is restarted by the kubelet: its
        # previous container's last lines come first, above the marker.
        kubectl("exec", "-n", ns, pod, "--", "python", "-c", KILL_WORKER)
        poll(lambda: any(s.get("restartCount", 0) > 0 for s in kubectl.json("get", "pod", pod, "-n", ns)["status"]
                         .get("containerStatuses", [])), 120, "the worker container to restart")
        restarted = poll(lambda: (l := gateway_logs(address, password, name)[1]["workers"].get(pod))
                         and any("restarted" in line for line in l) and l, 60, "the previous container's log")
        marker = next(i for i, line in enumerate(restarted) if "restarted" in line)
        assert marker > 0 and any("Registered to" in line for line in restarted[:marker]), restarted
        client.close()
    finally:
        cluster.shutdown()
    poll(lambda: not cluster_pods(kubectl, ns, name, "worker") and not cluster_pods(kubectl, ns, name, "scheduler"),
         180, "every pod of the cluster to go")
    stopped = gateway.list_clusters(status="stopped")
    assert name in [c.name for c in stopped]  # beside the other tests' clusters of alice
    status, logs = gateway_logs(address, password, name)
    assert status == 200 and logs["status"] == "STOPPED"
    assert any("Scheduler at" in line for line in logs["scheduler"]), "the captured scheduler log"
    gateway.close()
