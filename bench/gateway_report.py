#!/usr/bin/env python3
"""Tabulates bench/gateway.sh's figures: gateway_report.py DIR, where DIR holds
responder.json, python.json, dask-rs.json and, when a pool config was given,
pool.json (one JSON object each, from gateway_bench.py)."""

import json
import os
import sys

out = sys.argv[1]


def figures(name):
    path = os.path.join(out, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


limit, py, rs, pool = (figures(n) for n in ("responder", "python", "dask-rs", "pool"))
loads = [k for k in rs if k.endswith(("c1", "c200"))]

print("API throughput against the physical limit (a minimal responder: fixed bytes, no parsing)")
print(f"{'req/s':30} {'responder':>10} {'python':>10} {'dask-rs':>10} {'dask-rs/limit':>14} {'python/limit':>13}")
for key in loads:
    top = limit[key]["rps"]
    print(f"{key:30} {top:10.0f} {py[key]['rps']:10.0f} {rs[key]['rps']:10.0f} "
          f"{rs[key]['rps'] / top:14.0%} {py[key]['rps'] / top:13.0%}")

print(f"\n{'figure':34} {'python':>12} {'dask-rs':>12} {'ratio':>8}")


def row(label, a, b, better="higher"):
    ratio = (b / a) if better == "higher" else (a / b)
    print(f"{label:34} {a:12.2f} {b:12.2f} {ratio:7.1f}x")


for key in loads:
    row(f"{key} req/s", py[key]["rps"], rs[key]["rps"])
    row(f"{key} p99 ms", py[key]["p99_ms"], rs[key]["p99_ms"], "lower")
row("proxy round trip (MiB/s)", py["proxy_mib_s"], rs["proxy_mib_s"])
print(f"{'proxy vs direct TLS':34} {py['proxy_mib_s'] / py['direct_mib_s']:11.0%} "
      f"{rs['proxy_mib_s'] / rs['direct_mib_s']:11.0%}")
row("RSS idle (MiB)", py["rss_idle_mib"], rs["rss_idle_mib"], "lower")
row("RSS after load (MiB)", py["rss_after_load_mib"], rs["rss_after_load_mib"], "lower")

runs = os.environ.get("BENCH_LIFECYCLE_RUNS", "20")
print(f"\nCluster life cycle, seconds over {runs} runs (local backend)")
print(f"{'':30} {'python':>10} {'dask-rs':>10} {'dask-rs pool':>13}")
for key, label in (("new_cluster_s", "new_cluster -> running"), ("scale2_s", "scale(2) -> 2 workers")):
    for q in ("p50", "p99"):
        pooled = f"{pool[key][q]:13.3f}" if pool else f"{'n/a':>13}"
        print(f"{label + ' ' + q:30} {py[key][q]:10.3f} {rs[key][q]:10.3f} {pooled}")
