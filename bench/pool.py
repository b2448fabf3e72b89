#!/usr/bin/env python3
"""Instant clusters on the local backend: new_cluster() until RUNNING, and
scale(2) until two workers are connected, with and without the warm pool.

    bench/pool.py [RUNS]                (default 20; loopback only, every wait bounded)
    bench/pool.py --kubernetes [RUNS]   (the Kubernetes backend on a control plane)

Starts the Rust gateway (DASK_GATEWAY_BIN, else the debug build in
CARGO_TARGET_DIR) twice on a loopback port with the `dask` of this Python:
  * pool: [backend] pool_size = 1, fork_workers = true (the defaults),
  * cold: pool_size = 0, fork_workers = false (every process started cold).
Each run creates a cluster with the real dask-gateway client, times
new_cluster() (create, wait for RUNNING, the client's TLS connection to the
scheduler), then scale(2) until client.wait_for_workers(2) returns, computes
one task and shuts the cluster down. With the pool, a run starts once the
pool has a ready scheduler again ("whenever capacity is ready"), and the
/metrics counter shows where each cluster came from.
Prints one line per mode with p50 and p99 in milliseconds, then one JSON line.

With --kubernetes (KUBECONFIG set, e.g. the `sim` tier: eval "$(tests/k8s/cluster
env)"), the gateway runs the Kubernetes backend in a scratch namespace with
the operator of this checkout (DASK_OPERATOR_BIN, else the debug build),
pool_size 1 and then 0, and times the API alone: POST a cluster, then GET
`?wait` until it is RUNNING (kwok runs no Dask, so no client connection and
no scale). Cold, that is the gateway's creates, the operator's reconcile and
the scheduler pod becoming Ready (on kwok: its simulated start, not an image
pull and Python's import); pooled, a conditional patch and a cache update.
"""

import faulthandler
import gc
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from dask_gateway import BasicAuth, Gateway

KUBERNETES = "--kubernetes" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--kubernetes"]
RUNS = int(ARGS[0]) if ARGS else 20
MODES = {
    "pool": "pool_size = 1\nfork_workers = true\n",
    "cold": "pool_size = 0\nfork_workers = false\n",
}


def gateway_bin():
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/dask-rs/target"))
    return os.environ.get("DASK_GATEWAY_BIN", str(target / "debug/dask-gateway"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(address, name):
    text = urllib.request.urlopen(address + "/metrics", timeout=10).read().decode()
    return {labels: float(v) for labels, v in re.findall(rf"^{name}\{{(.*)\}} (\S+)$", text, re.M)}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def wait_for_gateway(server, address):
    def answers():
        assert server.poll() is None, "the gateway exited"
        try:
            return urllib.request.urlopen(address + "/api/health", timeout=1).status == 200
        except OSError:
            return False
    wait_for(answers, 30, "the gateway to answer")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_mode(mode, local_options, tmp):
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    dask = Path(sys.executable).parent / "dask"
    config = tmp / f"{mode}.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n[backend]\ntype = "local"\ndask = "{dask}"\n'
        f'state_dir = "{tmp / mode}"\n{local_options}')
    log = open(tmp / f"{mode}.log", "wb")
    server = subprocess.Popen([gateway_bin(), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    pooled = mode == "pool"
    new_cluster, scale2 = [], []
    try:
        wait_for_gateway(server, address)
        gateway = Gateway(address, auth=BasicAuth("bench", ""))
        for _ in range(RUNS):
            if pooled:
                wait_for(lambda: metric(address, "dask_gateway_pool_schedulers").get('status="running"', 0) >= 1,
                         120, "a ready pooled scheduler")
            time.sleep(1.0)  # let the refill's and the last cluster's processes settle
            # A run that hangs says where, instead of waiting forever.
            faulthandler.dump_traceback_later(300, exit=True)
            t = time.perf_counter()
            cluster = gateway.new_cluster()
            new_cluster.append(time.perf_counter() - t)
            try:
                client = cluster.get_client(set_as_default=False)
                t = time.perf_counter()
                cluster.scale(2)
                client.wait_for_workers(2, timeout=120)
                scale2.append(time.perf_counter() - t)
                assert client.submit(lambda x: x + 1, 41).result(timeout=60) == 42
                client.close()
            finally:
                cluster.shutdown()
                faulthandler.cancel_dump_traceback_later()
                # The client's objects close themselves in __del__ with a
                # blocking call on an event loop: collected by chance on
                # that loop's thread, they deadlock it. Collect here.
                del cluster
                gc.collect()
        starts = metric(address, "dask_gateway_cluster_starts_total")
        gateway.close()
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    return new_cluster, scale2, starts


def kubectl(*args, **kwargs):
    return subprocess.run(["kubectl", *args], check=True, capture_output=True, text=True, **kwargs)


def api(address, method, path, body=None):
    request = urllib.request.Request(address + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Authorization", "Basic YmVuY2g6")  # bench, no password
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as answer:
        text = answer.read()
        return json.loads(text) if text else None


def run_kubernetes_mode(mode, pool_size, tmp):
    """POST → RUNNING through the API, on a namespace of its own."""
    root = Path(__file__).resolve().parents[1]
    namespace = f"bench-pool-{mode}-{os.getpid()}"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(root / "crds/yaml"))
    kubectl("create", "namespace", namespace)
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/dask-rs/target"))
    operator_bin = os.environ.get("DASK_OPERATOR_BIN", str(target / "debug/dask-operator"))
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    config = tmp / f"k8s-{mode}.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n[cluster]\nstart_timeout = 120\n[backend]\ntype = "kubernetes"\n'
        f'namespace = "{namespace}"\nimage = "dask-rs/worker:test"\ninstance = "bench-{namespace}"\n'
        f'api_url = "http://dask-gateway.{namespace}:8000/api"\npool_size = {pool_size}\n')
    log = open(tmp / f"k8s-{mode}.log", "wb")
    operator = subprocess.Popen([operator_bin, "--namespace", namespace, "--metrics-addr", "127.0.0.1:0"],
                                stdout=log, stderr=subprocess.STDOUT)
    server = subprocess.Popen([gateway_bin(), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    running = []
    try:
        wait_for_gateway(server, address)
        for _ in range(RUNS):
            if pool_size:
                wait_for(lambda: metric(address, "dask_gateway_pool_schedulers").get('status="running"', 0) >= 1,
                         120, "a ready pooled cluster")
            time.sleep(0.5)
            t = time.perf_counter()
            name = api(address, "POST", "/api/v1/clusters/", {})["name"]
            deadline = time.monotonic() + 120
            while api(address, "GET", f"/api/v1/clusters/{name}?wait")["status"] != "RUNNING":
                assert time.monotonic() < deadline, f"cluster {name} did not run"
            running.append(time.perf_counter() - t)
            api(address, "DELETE", f"/api/v1/clusters/{name}")
        starts = metric(address, "dask_gateway_cluster_starts_total")
    finally:
        for proc in (server, operator):
            proc.terminate()
            proc.wait(30)
        log.close()
        kubectl("delete", "namespace", namespace, "--wait=false")
    return running, starts


def main_kubernetes():
    figures = {}
    with tempfile.TemporaryDirectory(prefix="dask-rs-pool-bench-") as tmp:
        for mode, pool_size in (("pool", 1), ("cold", 0)):
            running, starts = run_kubernetes_mode(mode, pool_size, Path(tmp))
            row = {"runs": RUNS, "starts": starts,
                   "running_p50_ms": round(statistics.median(running) * 1000, 1),
                   "running_p99_ms": round(percentile(running, 99) * 1000, 1)}
            figures[f"kubernetes-{mode}"] = row
            print(f"kubernetes {mode}: POST → RUNNING p50 {row['running_p50_ms']} ms p99 {row['running_p99_ms']} ms; "
                  f"starts {starts}", flush=True)
    print(json.dumps(figures))


def main():
    if KUBERNETES:
        return main_kubernetes()
    gc.disable()  # see run_mode: garbage is collected between runs, on this thread
    figures = {}
    with tempfile.TemporaryDirectory(prefix="dask-rs-pool-bench-") as tmp:
        for mode, options in MODES.items():
            new_cluster, scale2, starts = run_mode(mode, options, Path(tmp))
            row = {"runs": RUNS, "starts": starts}
            for what, values in (("new_cluster", new_cluster), ("scale2", scale2)):
                row[f"{what}_p50_ms"] = round(statistics.median(values) * 1000, 1)
                row[f"{what}_p99_ms"] = round(percentile(values, 99) * 1000, 1)
            figures[mode] = row
            print(f"{mode}: new_cluster→RUNNING p50 {row['new_cluster_p50_ms']} ms p99 {row['new_cluster_p99_ms']} ms; "
                  f"scale(2)→2 workers p50 {row['scale2_p50_ms']} ms p99 {row['scale2_p99_ms']} ms; "
                  f"starts {starts}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
