"""dask-kubernetes' own Python client, `KubeCluster`, against our operator: it
creates its DaskCluster, waits for the scheduler, port-forwards to it through
the API server and kubelet, and computes."""

import uuid

import pytest


def test_kubecluster_computes_through_our_operator(kubectl, release, worker_image):
    from dask_kubernetes.operator import KubeCluster
    from distributed import Client
    import dask.array as da

    name = f"kc-{uuid.uuid4().hex[:6]}"
    with KubeCluster(name=name, namespace=release, image=worker_image, n_workers=2,
                     resources={"requests": {"memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                     shutdown_on_close=True, resource_timeout=120) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            assert da.arange(1000, chunks=100).sum().compute() == 499500
        cluster.scale(1)
        client_pods = lambda: kubectl.json("-n", release, "get", "pods", "-l",
                                           f"dask.org/cluster-name={name},dask.org/component=worker")["items"]
        import time
        deadline = time.monotonic() + 120
        while len([p for p in client_pods() if not p["metadata"].get("deletionTimestamp")]) != 1:
            assert time.monotonic() < deadline, "KubeCluster.scale(1) did not leave one worker"
            time.sleep(1)


def test_kubecluster_get_logs_reads_our_pods(release, worker_image):
    """`KubeCluster.get_logs()` finds our operator's pods by the
    `dask.org/cluster-name` label, tells scheduler and workers apart by pod
    name, and reads their logs through the API server."""
    from dask_kubernetes.operator import KubeCluster
    from distributed import Client

    name = f"kl-{uuid.uuid4().hex[:6]}"
    with KubeCluster(name=name, namespace=release, image=worker_image, n_workers=1,
                     resources={"requests": {"memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                     shutdown_on_close=True, resource_timeout=120) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=120)
        logs = cluster.get_logs()
        schedulers = [pod for pod in logs if "scheduler" in pod]
        workers = [pod for pod in logs if "worker" in pod]
        assert len(schedulers) == 1 and len(workers) == 1, list(logs)
        assert schedulers[0].startswith(f"{name}-scheduler-") and workers[0].startswith(f"{name}-default-worker-")
        assert "Scheduler at" in logs[schedulers[0]], logs[schedulers[0]]
        assert "Registered to" in logs[workers[0]], logs[workers[0]]
