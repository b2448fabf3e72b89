"""Why a Kubernetes cluster does not start reaches its user (`sim` tier: the
real API server and kube-scheduler, kwok nodes, the real operator and the
real dask-gateway client). kwok runs no containers, so a bad image is told
to the API server as a kubelet would tell it (a patch of the pod's status);
an impossible request is refused by the real kube-scheduler."""

import gc
import json
import threading
import time

import pytest
from dask_gateway import BasicAuth, Gateway, GatewayClusterError
from testlib import poll



def k8s_gateway(start_gateway, namespace, image="dask-rs/worker:test", start_timeout=120, extra=""):
    backend = (f'[backend]\ntype = "kubernetes"\nnamespace = "{namespace}"\nimage = "{image}"\n'
               f'api_url = "http://dask-gateway.{namespace}:8000/api"\ninstance = "test-{namespace}"\n{extra}')
    return start_gateway(f"[cluster]\nstart_timeout = {start_timeout}\n", backend=backend)


def scheduler_pod(kubectl, namespace):
    """The scheduler pod, once kwok runs it (it has an IP)."""
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "dask.org/component=scheduler")["items"]
    return next((p for p in pods if p.get("status", {}).get("podIP")), None)


PULL_ERROR = 'rpc error: code = NotFound desc = failed to pull and unpack image "ghcr.io/dask/dask:no-such-tag": not found'
BAD_IMAGE = {"image": "ghcr.io/dask/dask:no-such-tag", "restartCount": 0,
             "state": {"waiting": {"reason": "ErrImagePull", "message": PULL_ERROR}}}
CRASH = {"image": "dask-rs/worker:test", "restartCount": 2,
         "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}},
         "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                      "message": "ValueError: could not convert string to float: 'not-a-time'",
                                      "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:02Z"}}}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("image, container, expected", [
    ("ghcr.io/dask/dask:no-such-tag", BAD_IMAGE,
     ['failed to start: ImagePullBackOff: cannot pull image "ghcr.io/dask/dask:no-such-tag"', "not found"]),
    ("dask-rs/worker:test", CRASH,
     ["failed to start: CrashLoopBackOff: container scheduler of pod",
      "exited with code 1 (ValueError: could not convert string to float: 'not-a-time') (restarted 2 times)"]),
], ids=["bad-image", "crash-at-start"])
def test_a_scheduler_that_cannot_start_makes_new_cluster_raise_with_why(
        kubectl, namespace, operator, start_gateway, image, container, expected):
    gw = k8s_gateway(start_gateway, namespace, image=image)
    told = {}

    def kubelet():
        # What a kubelet says of the scheduler's container.
        pod = poll(lambda: scheduler_pod(kubectl, namespace), 60, "the scheduler pod")
        status = {"status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
            "containerStatuses": [{"name": "scheduler", "imageID": "", "ready": False, **container}]}}
        kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
                "--type=strategic", "-p", json.dumps(status))
        told["at"] = time.monotonic()

    thread = threading.Thread(target=kubelet, daemon=True)
    client = Gateway(gw.address, auth=BasicAuth("alice", ""))
    started = time.monotonic()
    thread.start()
    with pytest.raises(GatewayClusterError) as raised:
        client.new_cluster()
    ended = time.monotonic()
    message = str(raised.value)
    del raised
    gc.collect()
    client.close()
    thread.join(5)
    print(f"\nnew_cluster raised {ended - started:.1f}s after the call, "
          f"{ended - told['at']:.1f}s after the kubelet told: {message}")
    for part in expected:
        assert part in message, message
    assert "did not become ready" not in message

    # The record keeps the reason; the DaskCluster and its pods go.
    failed = poll(lambda: gw.request("GET", "/api/v1/clusters/?status=FAILED", "alice")[1], 90, "the FAILED cluster listed (after its pods' logs are captured)")
    assert len(failed) == 1
    name = next(iter(failed))
    poll(lambda: kubectl.run("get", "daskcluster", f"dask-{name}", "-n", namespace, check=False).returncode != 0,
         60, "the failed DaskCluster to be deleted")
    status, waited, _ = gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice")
    assert status == 409 and expected[-1] in waited["error"]


@pytest.mark.timeout(150)
def test_an_unschedulable_scheduler_fails_at_the_start_timeout_with_the_schedulers_message(
        kubectl, namespace, operator, start_gateway):
    # Refused by every node: its scheduler asks for 1000 CPUs.
    gw = k8s_gateway(start_gateway, namespace, start_timeout=15, extra="scheduler_cores = 1000\n")
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {})
    assert status == 201, body
    name = body["name"]
    dc = poll(lambda: (c := kubectl.json("get", "daskcluster", f"dask-{name}", "-n", namespace)).get("status", {}).get("conditions")
              and any(x["type"] == "SchedulerReady" and x["reason"] == "Unschedulable" for x in c["status"]["conditions"]) and c,
              60, "SchedulerReady Unschedulable")
    assert dc["status"]["phase"] == "Pending"
    started = time.monotonic()
    error = poll(lambda: (r := gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice"))[0] == 409 and r[1]["error"],
                 60, "the start timeout")
    print(f"\n?wait answered 409 {time.monotonic() - started:.1f}s after Unschedulable was told: {error}")
    assert "the scheduler did not become ready within 15s: Unschedulable: pod" in error
    assert "Insufficient cpu" in error
