"""A dask-kubernetes style DaskCluster manifest, reconciled by our operator
(installed with the chart) into real scheduler and worker pods that compute."""

import json
import uuid

import pytest
from testlib import dask_scheduler, poll




def dask_cluster(name, image, replicas):
    # The shape of dask-kubernetes' own tests/simplecluster.yaml.
    return f"""
apiVersion: kubernetes.dask.org/v1
kind: DaskCluster
metadata: {{name: {name}}}
spec:
  worker:
    replicas: {replicas}
    spec:
      containers:
      - name: worker
        image: {image}
        imagePullPolicy: Never
        args: [dask, worker, --name, $(DASK_WORKER_NAME), --nthreads, "1", --memory-limit, 512MiB, --dashboard, --dashboard-address, "8788"]
        ports: [{{name: http-dashboard, containerPort: 8788, protocol: TCP}}]
        resources: {{requests: {{cpu: 100m, memory: 256Mi}}, limits: {{memory: 768Mi}}}}
  scheduler: {dask_scheduler(name, image, args=("dask", "scheduler", "--host", "0.0.0.0"), initial_delay=2)}
"""


def running_workers(kubectl, ns, name):
    pods = kubectl.json("-n", ns, "get", "pods", "-l", f"dask.org/cluster-name={name},dask.org/component=worker")["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def test_manifest_becomes_a_computing_cluster(kubectl, release, worker_image):
    ns, name = release, f"e2e-{uuid.uuid4().hex[:6]}"
    kubectl("-n", ns, "apply", "-f", "-", input=dask_cluster(name, worker_image, 2))
    poll(lambda: kubectl.json("-n", ns, "get", "daskcluster", name).get("status", {}).get("phase") == "Running",
         180, "the DaskCluster to be Running")
    poll(lambda: len(running_workers(kubectl, ns, name)) == 2, 180, "two running worker pods")

    # Compute from here, through the scheduler Service's ClusterIP (kube-proxy).
    from distributed import Client
    import dask.array as da
    ip = kubectl.json("-n", ns, "get", "service", f"{name}-scheduler")["spec"]["clusterIP"]
    with Client(f"tcp://{ip}:8786", timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
        assert da.ones((2000, 2000), chunks=250).mean().compute() == 1.0
        assert len(client.scheduler_info()["workers"]) == 2

    kubectl("-n", ns, "delete", "daskcluster", name)
    poll(lambda: not kubectl.json("-n", ns, "get", "pods", "-l", f"dask.org/cluster-name={name}")["items"],
         120, "every pod of the deleted cluster to go")
