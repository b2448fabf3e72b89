"""Why pods do not run, on real pods (containerd, the real kubelet): the
operator installed by the chart tells a bad image, a scheduler that crashes
at start and a worker killed by its memory limit on the DaskCluster (and
its DaskWorkerGroup) as conditions and Warning Events, and fails the cluster
whose scheduler cannot start. Each test prints the seconds from the create
to the verdict."""

import json
import time
import uuid

import pytest
from testlib import dask_scheduler, poll


def manifest(name, scheduler, worker_container, replicas=0):
    return f"""
apiVersion: kubernetes.dask.org/v1
kind: DaskCluster
metadata: {{name: {name}}}
spec:
  worker:
    replicas: {replicas}
    spec:
      containers: [{worker_container}]
  scheduler: {scheduler}
"""


def worker(image, **extra):
    fields = {"name": "worker", "image": image, "imagePullPolicy": "Never",
              "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)"], **extra}
    return json.dumps(fields)


def condition(cluster, type_):
    return next((c for c in cluster.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def warnings(kubectl, ns, kind, name):
    events = kubectl.json("-n", ns, "get", "events")["items"]
    return [e for e in events if e["type"] == "Warning" and e["involvedObject"]["kind"] == kind
            and e["involvedObject"]["name"] == name]


def failed(kubectl, ns, name):
    cluster = kubectl.json("-n", ns, "get", "daskcluster", name)
    return cluster if cluster.get("status", {}).get("phase") == "Failed" else None


@pytest.mark.timeout(300)
def test_a_bad_image_fails_the_cluster_with_the_image(kubectl, release, worker_image):
    ns, name = release, f"badimage-{uuid.uuid4().hex[:6]}"
    bad = "dask-rs.local/no-such-image:nope"
    scheduler = dask_scheduler(name, bad, args=("dask", "scheduler", "--host", "0.0.0.0"))
    # Always: the kubelet must ask a registry, which does not know the image.
    scheduler = scheduler.replace('"imagePullPolicy": "Never"', '"imagePullPolicy": "Always"')
    assert '"Always"' in scheduler
    start = time.monotonic()
    kubectl("-n", ns, "apply", "-f", "-", input=manifest(name, scheduler, worker(worker_image)))
    try:
        cluster = poll(lambda: failed(kubectl, ns, name), 180, "the cluster to be Failed")
        print(f"\nbad image: Failed {time.monotonic() - start:.1f}s after the create")
        told = condition(cluster, "SchedulerReady")
        assert told["status"] == "False" and told["reason"] in ("ImagePullBackOff", "InvalidImageName"), told
        assert bad in told["message"], told
        print(f"  {told['reason']}: {told['message']}")
        reasons = {e["reason"] for e in warnings(kubectl, ns, "DaskCluster", name)}
        assert {"Failed"} <= reasons and reasons & {"ImagePullBackOff", "InvalidImageName"}, reasons
    finally:
        kubectl("-n", ns, "delete", "daskcluster", name, "--wait=false")


@pytest.mark.timeout(300)
def test_a_scheduler_that_crashes_at_start_fails_the_cluster_with_its_exit(kubectl, release, worker_image):
    ns, name = release, f"crash-{uuid.uuid4().hex[:6]}"
    # An unknown flag: `dask scheduler` exits with code 2 at once, every time.
    scheduler = dask_scheduler(name, worker_image, args=("dask", "scheduler", "--no-such-flag"))
    start = time.monotonic()
    kubectl("-n", ns, "apply", "-f", "-", input=manifest(name, scheduler, worker(worker_image)))
    try:
        cluster = poll(lambda: failed(kubectl, ns, name), 180, "the cluster to be Failed")
        print(f"\ncrash at start: Failed {time.monotonic() - start:.1f}s after the create")
        told = condition(cluster, "SchedulerReady")
        assert told["reason"] == "CrashLoopBackOff" and "exited with code 2" in told["message"], told
        print(f"  {told['reason']}: {told['message']}")
        assert "CrashLoopBackOff" in {e["reason"] for e in warnings(kubectl, ns, "DaskCluster", name)}
    finally:
        kubectl("-n", ns, "delete", "daskcluster", name, "--wait=false")


def found(kubectl, ns, kind, name):
    """The object, or None while it does not exist (yet)."""
    proc = kubectl.run("-n", ns, "get", kind, name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


@pytest.mark.timeout(300)
def test_a_worker_killed_by_its_memory_limit_is_told_on_its_group_and_cluster(kubectl, release, worker_image):
    ns, name = release, f"oom-{uuid.uuid4().hex[:6]}"
    scheduler = dask_scheduler(name, worker_image, args=("dask", "scheduler", "--host", "0.0.0.0"))
    # 1 GiB in a 64 MiB container: the kernel kills it, the kubelet says OOMKilled.
    hog = worker(worker_image, command=["python", "-c", "b = bytearray(1 << 30); import time; time.sleep(600)"],
                 args=[], resources={"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}})
    start = time.monotonic()
    kubectl("-n", ns, "apply", "-f", "-", input=manifest(name, scheduler, hog, replicas=1))
    try:
        # The operator makes the group a moment after the cluster.
        group = poll(lambda: (g := found(kubectl, ns, "daskworkergroup", f"{name}-default"))
                     and (c := condition(g, "WorkersReady")) and c["reason"] == "OOMKilled" and g,
                     180, "WorkersReady OOMKilled on the group")
        print(f"\nOOMKilled: told {time.monotonic() - start:.1f}s after the create")
        told = condition(group, "WorkersReady")
        assert told["status"] == "False" and "exceeding its memory limit" in told["message"], told
        print(f"  {told['reason']}: {told['message']}")
        poll(lambda: (c := condition(kubectl.json("-n", ns, "get", "daskcluster", name), "WorkersReady"))
             and c["reason"] == "OOMKilled", 60, "WorkersReady OOMKilled on the cluster")
        poll(lambda: any(e["reason"] == "OOMKilled" for e in warnings(kubectl, ns, "DaskWorkerGroup", f"{name}-default")),
             60, "an OOMKilled Warning on the group")
        assert kubectl.json("-n", ns, "get", "daskcluster", name)["status"]["phase"] != "Failed", \
            "a worker's kill fails no cluster"
    finally:
        kubectl("-n", ns, "delete", "daskcluster", name, "--wait=false")
