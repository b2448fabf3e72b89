"""A DaskJob on real pods: the operator makes the job's cluster, starts the
runner once the scheduler runs, the runner computes against it and succeeds,
and the cluster is deleted while the job keeps its record."""

import time
import uuid

from testlib import dask_scheduler

RUNNER = (
    "import os; from distributed import Client; import dask.array as da; "
    "c = Client(os.environ['DASK_SCHEDULER_ADDRESS'], timeout=60); c.wait_for_workers(1, timeout=120); "
    "assert da.ones((1000, 1000), chunks=100).sum().compute() == 1e6; print('job done')"
)


def test_daskjob_runs_to_success_and_cleans_up(kubectl, release, worker_image):
    name = f"job-{uuid.uuid4().hex[:6]}"
    kubectl("-n", release, "apply", "-f", "-", input=f"""
apiVersion: kubernetes.dask.org/v1
kind: DaskJob
metadata: {{name: {name}}}
spec:
  job:
    spec:
      containers:
      - name: job
        image: {worker_image}
        imagePullPolicy: Never
        args: [python, -c, "{RUNNER}"]
  cluster:
    spec:
      worker:
        replicas: 1
        spec:
          containers:
          - name: worker
            image: {worker_image}
            imagePullPolicy: Never
            args: [dask, worker, --name, $(DASK_WORKER_NAME), --nthreads, "1", --memory-limit, 512MiB]
      scheduler: {dask_scheduler(name, worker_image)}
""")
    deadline = time.monotonic() + 240
    while True:
        status = kubectl.json("-n", release, "get", "daskjob", name).get("status", {})
        if status.get("jobStatus") in ("Successful", "Failed"):
            break
        assert time.monotonic() < deadline, f"the job did not finish: {status}"
        time.sleep(2)
    runner = status["jobRunnerPodName"]
    assert status["jobStatus"] == "Successful", kubectl("-n", release, "logs", runner)
    assert status["clusterName"] == name and status["startTime"] and status["endTime"]
    assert runner.startswith(f"{name}-runner-")
    assert "job done" in kubectl("-n", release, "logs", runner)
    # The job's cluster goes; the job (and its runner's logs) stay.
    deadline = time.monotonic() + 120
    while kubectl.run("-n", release, "get", "daskcluster", name, check=False).returncode == 0:
        assert time.monotonic() < deadline, "the job's DaskCluster was not deleted"
        time.sleep(1)
    kubectl("-n", release, "delete", "daskjob", name)
