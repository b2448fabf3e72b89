#!/usr/bin/env python3
"""Operator benchmark: N DaskClusters x W workers on the `sim` tier (kwok nodes),
for each operator in turn, in one run:

  * time from the first apply to every scheduler and worker pod created,
  * time until every DaskCluster reports phase Running,
  * the operator's CPU seconds and peak resident memory (VmHWM).

    bench/operator.sh [N] [WORKERS]      (the wrapper sets up the environment)

Compared: our Rust operator (target/release/dask-operator) and the Python
dask-kubernetes operator (kopf, from PyPI) on the same control plane, against
the same manifests. Prints a table; asserts nothing.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", 1800))


def kubectl(*args, input=None):
    return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, check=True).stdout


def manifest(name):
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": {"name": name},
        "spec": {
            "worker": {"replicas": WORKERS, "spec": {"containers": [{
                "name": "worker", "image": "ghcr.io/dask/dask:latest",
                "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)"]}]}},
            "scheduler": {
                "spec": {"containers": [{"name": "scheduler", "image": "ghcr.io/dask/dask:latest",
                                         "args": ["dask", "scheduler"],
                                         "ports": [{"name": "tcp-comm", "containerPort": 8786},
                                                   {"name": "http-dashboard", "containerPort": 8787}]}]},
                "service": {"type": "ClusterIP",
                            "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
                            "ports": [{"name": "tcp-comm", "port": 8786, "targetPort": "tcp-comm"},
                                      {"name": "http-dashboard", "port": 8787, "targetPort": "http-dashboard"}]},
            },
        },
    }


def proc_stats(pid):
    """(cpu seconds, peak RSS MiB) of a process and its children so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = sum(int(x) for x in fields[11:15]) / ticks  # utime stime cutime cstime
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return cpu, hwm / 1024


def count(ns):
    pods = kubectl("-n", ns, "get", "pods", "-l", "dask.org/cluster-name", "-o", "name", "--chunk-size=1000")
    phases = kubectl("-n", ns, "get", "daskclusters", "-o", "jsonpath={.items[*].status.phase}", "--chunk-size=1000")
    return len(pods.split()), phases.split().count("Running")


def run(label, cmd, ns):
    kubectl("create", "namespace", ns)
    log = open(f"/tmp/bench-{ns}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(3)  # let it connect and start its watches
    docs = [json.dumps(manifest(f"c{i:04d}")) for i in range(N)]
    t0 = time.monotonic()
    # Applying is part of the measured window for both; parallel kubectl keeps it short.
    batches = [docs[i:i + 100] for i in range(0, N, 100)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda b: kubectl("-n", ns, "apply", "-f", "-", input="\n---\n".join(b)), batches))
    applied = time.monotonic() - t0
    created = running = None
    while time.monotonic() - t0 < TIMEOUT:
        pods, ready = count(ns)
        now = time.monotonic() - t0
        if created is None and pods >= N * (WORKERS + 1):
            created = now
        if ready >= N and created is None:
            # Every cluster became Running between the two counts above.
            created = now
        if ready >= N:
            running = now
            break
        if proc.poll() is not None:
            break
        time.sleep(1)
    cpu, rss = proc_stats(proc.pid) if proc.poll() is None else (float("nan"), float("nan"))
    proc.terminate()
    proc.wait(30)
    subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)
    return {"label": label, "applied": applied, "created": created, "running": running, "cpu": cpu, "rss": rss}


def fmt(v):
    return "timeout" if v is None else f"{v:8.1f}"


def main():
    operators = {
        "rs": ("dask-rs (Rust)", os.environ["DASK_OPERATOR_CMD"].split(), "bench-rs"),
        "py": ("dask-kubernetes (kopf)", [
            sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", "bench-py",
            "-m", "dask_kubernetes.operator.controller"], "bench-py"),
    }
    # BENCH_OPERATORS=rs measures ours alone (e.g. while tuning); the ratio needs both.
    chosen = os.environ.get("BENCH_OPERATORS", "rs,py").split(",")
    results = [run(*operators[key]) for key in chosen]
    print(f"\n{N} DaskClusters x {WORKERS} workers on the sim tier (seconds from first apply)")
    print(f"{'operator':24} {'applied':>8} {'all pods':>8} {'Running':>8} {'CPU s':>8} {'peak MiB':>8}")
    for r in results:
        print(f"{r['label']:24} {r['applied']:8.1f} {fmt(r['created'])} {fmt(r['running'])} {r['cpu']:8.1f} {r['rss']:8.1f}")
    if len(results) == 2:
        for key, what in (("created", "all pods"), ("running", "all Running")):
            rs, py = (r[key] for r in results)
            if rs and py:
                print(f"speed-up to {what}: {py / rs:.1f}x")
            elif rs:  # theirs timed out: the ratio is at least this
                print(f"speed-up to {what}: > {TIMEOUT / rs:.1f}x (dask-kubernetes timed out at {TIMEOUT:.0f} s)")


if __name__ == "__main__":
    main()
