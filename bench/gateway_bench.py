#!/usr/bin/env python3
"""Gateway benchmark: the same client workload against a running gateway.

    gateway_bench.py NAME URL PID [--load-only]

Measures, against URL (all on loopback, every loop bounded):
  * API latency and throughput of GET /api/v1/clusters/ and /api/v1/options
    with 1 and 200 concurrent clients (alone with --load-only: the minimal
    responder, the physical limit),
  * new_cluster() until RUNNING, and scale(2) until two workers are connected,
    LIFECYCLE_RUNS times (BENCH_LIFECYCLE_RUNS, 20): p50 and p99 of each,
  * proxy throughput: a round trip of 256 MiB through gateway://…/<name>
    (routed by SNI: relayed by the Python server's proxy; handed over to the
    scheduler process by ours) against the same round trip on a direct TLS
    connection to the scheduler; the median of ROUND_TRIPS alternating runs,
  * resident memory (VmRSS) of the server's process tree (PID).
Prints one JSON line of figures; bench/gateway.sh tabulates them.
"""

import base64
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

NAME, URL, PID = sys.argv[1], sys.argv[2].rstrip("/"), int(sys.argv[3])
ROUND_TRIPS = 5
LIFECYCLE_RUNS = int(os.environ.get("BENCH_LIFECYCLE_RUNS", 20))


def load(path, concurrency, seconds=5):
    """wrk (C, from Debian) generates the load: a Python client would saturate
    long before a fast server does. Bounded by time, loopback only."""
    token = base64.b64encode(b"bench:").decode()
    out = subprocess.run(
        ["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds}s", "--latency",
         "-H", f"Authorization: Basic {token}", URL + path],
        capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert not non2xx, f"{non2xx.group(1)} failed requests on {path}"

    def pct(p):
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99)}


def rss_mib(pid):
    """Resident memory of pid and all its descendants (the Python server has a Go proxy child)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            pass
    return total / 1024


def round_trip_mib_s(client, mib=256):
    data = np.ones(mib * 2**20 // 8)
    t = time.perf_counter()
    future = client.scatter(data, direct=False)
    back = future.result()
    elapsed = time.perf_counter() - t
    assert back.shape == data.shape
    return 2 * mib / elapsed


def p50_p99(values):
    values = sorted(values)
    return {"p50": statistics.median(values), "p99": values[min(len(values) - 1, int(0.99 * len(values)))]}


def lifecycle():
    """new_cluster -> RUNNING and scale(2) -> two workers, LIFECYCLE_RUNS times,
    one cluster at a time; the proxy figures on the first cluster."""
    from dask_gateway import BasicAuth, Gateway

    new_cluster, scale2, figures = [], [], {}
    for run in range(LIFECYCLE_RUNS):
        # A client per run: the Python server answered a reused client's
        # cookie with 401 after a shutdown, and that client then hung.
        gateway = Gateway(URL, auth=BasicAuth("bench"))
        t = time.perf_counter()
        cluster = gateway.new_cluster(profile="small")
        new_cluster.append(time.perf_counter() - t)
        try:
            client = cluster.get_client()
            t = time.perf_counter()
            cluster.scale(2)
            client.wait_for_workers(2, timeout=120)
            scale2.append(time.perf_counter() - t)
            if run == 0:
                figures.update(proxy(cluster, client))
            client.close()
        finally:
            cluster.shutdown()
            gateway.close()
    print(f"{NAME}: new_cluster {new_cluster} scale(2) {scale2} s", file=sys.stderr)
    figures["new_cluster_s"], figures["scale2_s"] = p50_p99(new_cluster), p50_p99(scale2)
    return figures


def proxy(cluster, client):
    """Round trips through the gateway against a direct TLS connection."""
    from distributed import Client

    direct = Client(client.scheduler_info()["address"], security=cluster.security)
    # Warm both paths up, then alternate them, so neither pays for the
    # workers' start-up or first allocations; report medians.
    round_trip_mib_s(client, 16), round_trip_mib_s(direct, 16)
    proxied, straight = [], []
    for _ in range(ROUND_TRIPS):
        proxied.append(round_trip_mib_s(client))
        straight.append(round_trip_mib_s(direct))
    print(f"{NAME}: proxy {proxied} direct {straight} MiB/s", file=sys.stderr)
    direct.close()
    return {"proxy_mib_s": statistics.median(proxied), "direct_mib_s": statistics.median(straight)}


def main():
    figures = {"name": NAME, "rss_idle_mib": rss_mib(PID)}
    for path in ("/api/v1/clusters/", "/api/v1/options"):
        figures[f"{path} c1"] = load(path, 1)
        figures[f"{path} c200"] = load(path, 200)
    figures["rss_after_load_mib"] = rss_mib(PID)
    if "--load-only" not in sys.argv:
        figures.update(lifecycle())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
