#!/usr/bin/env python3
"""Soak benchmark: create/scale/stop churn through our gateway for a duration,
on the local backend and then on the Kubernetes backend (sim tier, with our
operator). Prints one table, the two backends side by side.

    bench/soak.sh [DURATION=3600] [LOOPS=2]

LOOPS users churn at once: create -> RUNNING -> scale(2) -> stop -> gone,
again until DURATION. On the sim tier no scheduler runs, so the scale is a
heartbeat asking for 2 (what the scheduler would send); on the local backend
the clusters are real `dask` processes and the scale is the gateway's.

Measured per backend: the RSS of the gateway (and operator) every 5 s, the
least-squares slope in MiB/hour; before the churn (after one warm-up cycle)
and after it (once every cluster is gone): the processes under the gateway,
the TCP ports they listen on, the gateway's and operator's open file
descriptors, and in the namespace the pods, Services, Secrets (live ones;
the history records a stopped cluster keeps are counted apart) and
DaskClusters. A leak is any count higher after than before, except the
history records (kept by design, one per stopped cluster). A short run's
slope is dominated by warm-up; only the full duration says MiB/hour.
"""

import asyncio
import os
import sys
import tempfile
import time

from simgw import (GROUP, Client, count_objects, descendants, fds, gateway, kubernetes_backend, listening_ports,
                   local_backend, operator, scheduler_token, unique)
import operator_bench as ob

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 3600
LOOPS = int(sys.argv[2]) if len(sys.argv) > 2 else 2


def slope_mib_per_hour(samples):
    """Least-squares slope of (seconds, MiB) samples, in MiB/hour."""
    if len(samples) < 3:
        return float("nan")
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 3600 * sum((t - mt) * (v - mv) for t, v in samples) / var if var else float("nan")


async def cycle(client, api, ns, user, k8s, stats):
    """One create -> RUNNING -> scale(2) -> stop -> gone; counts it in `stats`."""
    status, body = await client.request("POST", "/api/v1/clusters/", user, {})
    if status != 201:
        stats["failed"] += 1
        await asyncio.sleep(1)
        return
    name = body["name"]
    deadline = time.monotonic() + 120
    c = {}
    while time.monotonic() < deadline:
        status, c = await client.request("GET", f"/api/v1/clusters/{name}?wait", user)
        if status != 200 or c["status"] != "PENDING":
            break
    if status == 200 and c["status"] == "RUNNING":
        if k8s:
            token = await scheduler_token(api, ns, name)
            beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 2}
            await client.request("POST", f"/api/v1/clusters/{name}/heartbeat", None, beat,
                                 headers={"Authorization": f"token {token}"})
        else:
            await client.request("POST", f"/api/v1/clusters/{name}/scale", user, {"count": 2})
        await asyncio.sleep(1)
    else:
        stats["failed"] += 1
    await client.request("DELETE", f"/api/v1/clusters/{name}", user)
    while time.monotonic() < deadline + 60:
        status, listed = await client.request("GET", "/api/v1/clusters/", user)
        if status == 200 and name not in listed:
            break
        await asyncio.sleep(0.5)
    stats["cycles"] += 1


async def snapshot(api, ns, gw, op):
    """What the gateway, operator and namespace hold now."""
    kids = descendants(gw.pid)
    out = {"processes under the gateway": len(kids),
           "listening ports (gateway and children)": len(set().union(listening_ports(gw.pid),
                                                                     *(listening_ports(k) for k in kids))),
           "gateway fds": fds(gw.pid)}
    if op:
        out["operator fds"] = fds(op.pid)
        out.update(await count_objects(api, ns))
    return out


async def settle(client, user):
    """Waits (up to 60 s) until `user` lists no cluster, then 5 s more for the backends to finish."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, listed = await client.request("GET", "/api/v1/clusters/", user, record=False)
        if status == 200 and not listed:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(5)


async def soak(api, backend_name):
    k8s = backend_name == "kubernetes"
    tmp = tempfile.mkdtemp(prefix=f"bench-soak-{backend_name}-")
    ns = unique(f"{ob.NAMESPACE}-soak")
    op = None
    if k8s:
        await ob.fresh_namespace(api, ns)
        op = operator(tmp, ns).start()
    gw = gateway(tmp, kubernetes_backend(ns) if k8s else local_backend(tmp)).start()
    client = Client(gw.address)
    stats = {"cycles": 0, "failed": 0}
    rss = {"gateway": [], "operator": []}
    try:
        for i in range(LOOPS):  # warm-up: every loop's user once
            await cycle(client, api, ns, f"soak{i}", k8s, stats)
        await settle(client, "soak0")
        before = await snapshot(api, ns, gw, op)
        stats["cycles"] = 0
        t0 = time.monotonic()
        end = t0 + DURATION

        async def loop(i):
            while time.monotonic() < end:
                await cycle(client, api, ns, f"soak{i}", k8s, stats)

        async def sampler():
            while time.monotonic() < end:
                rss["gateway"].append((time.monotonic() - t0, gw.sample()))
                if op:
                    rss["operator"].append((time.monotonic() - t0, op.sample()))
                await asyncio.sleep(5)
        await asyncio.gather(sampler(), *(loop(i) for i in range(LOOPS)))
        for i in range(LOOPS):
            await settle(client, f"soak{i}")
        after = await snapshot(api, ns, gw, op)
    finally:
        await client.close()
        gw.stop()
        if op:
            op.stop()
            await ob.clean_namespace(api, ns)
    return {"backend": backend_name, "cycles": stats["cycles"], "failed": stats["failed"],
            "statuses": client.statuses, "before": before, "after": after,
            "gw_slope": slope_mib_per_hour(rss["gateway"]), "op_slope": slope_mib_per_hour(rss["operator"]),
            "gw_rss": (rss["gateway"][0][1], rss["gateway"][-1][1]) if rss["gateway"] else None,
            "op_rss": (rss["operator"][0][1], rss["operator"][-1][1]) if rss["operator"] else None,
            "gw_hwm": gw.hwm, "op_hwm": op.hwm if op else float("nan"), "logs": tmp}


async def main():
    api = ob.Api(os.environ["KUBECONFIG"])
    try:
        results = [await soak(api, b) for b in os.environ.get("BENCH_BACKENDS", "local,kubernetes").split(",")]
    finally:
        await api.close()
    report(results)


def report(results):
    fmt = ob.fmt
    print(f"\nSoak: {DURATION:g} s of create -> RUNNING -> scale(2) -> stop, {LOOPS} users at once")
    print(f"  {'':56}" + "".join(f"{r['backend']:>26}" for r in results))
    rows = [("cycles (failed)", lambda r: f"{r['cycles']} ({r['failed']})"),
            ("HTTP statuses", lambda r: str(r["statuses"])),
            ("gateway RSS first -> last (MiB)", lambda r: "%.1f -> %.1f" % r["gw_rss"] if r["gw_rss"] else "-"),
            ("gateway RSS slope (MiB/hour)", lambda r: f"{r['gw_slope']:.1f}"),
            ("gateway VmHWM (MiB)", lambda r: f"{r['gw_hwm']:.1f}"),
            ("operator RSS first -> last (MiB)", lambda r: "%.1f -> %.1f" % r["op_rss"] if r["op_rss"] else "-"),
            ("operator RSS slope (MiB/hour)", lambda r: f"{r['op_slope']:.1f}")]
    keys = list(dict.fromkeys(k for r in results for k in r["before"]))
    rows += [(f"{k} before -> after", lambda r, k=k: f"{r['before'].get(k, '-')} -> {r['after'].get(k, '-')}")
             for k in keys]
    for label, get in rows:
        print(f"  {label:56}" + "".join(f"  {get(r):>24}" for r in results))
    for r in results:
        # History records are kept by design (one per stopped cluster, until history pruning).
        leaks = {k: (r["before"][k], r["after"][k]) for k in r["before"]
                 if r["after"].get(k, 0) > r["before"][k] and "history" not in k}
        print(f"  {r['backend']}: {'no leak' if not leaks else 'LEAK ' + str(leaks)}; logs {r['logs']}")


if __name__ == "__main__":
    asyncio.run(main())
