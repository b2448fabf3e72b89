#!/usr/bin/env python3
"""Load benchmark: U concurrent users through our gateway (Kubernetes
backend) and operator on the `sim` tier. Prints one table.

    bench/load.sh [U=200]

Each user, all at once: create a cluster -> wait for RUNNING (`GET
/api/v1/clusters/<name>?wait`) -> scale to 2 -> stop (DELETE), then waits for
its DaskCluster to go. kwok pods run no Dask, so there is no compute on this
tier and no scheduler to take the gateway's scale order (`POST .../scale`
there makes the gateway mark the cluster FAILED, "the scheduler did not take
an order", as it should): the 2 workers come from a heartbeat asking for 2
(what a real scheduler sends after a scale), timed to both worker pods
existing. Measured: p50/p99 create -> RUNNING, p50/p99
heartbeat -> 2 worker pods, every HTTP status the users got (0 errors
expected: any 5xx or unexpected 4xx is one), peak RSS (VmHWM) of the gateway
and the operator.
"""

import asyncio
import os
import sys
import tempfile
import time

from simgw import (GROUP, Client, count_objects, gateway, kubernetes_backend, operator, percentiles,
                   scheduler_token, unique)
import operator_bench as ob

U = int(sys.argv[1]) if len(sys.argv) > 1 else 200
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", 300))


async def wait_until(check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def one_user(i, client, api, ns, out):
    """One user's create -> RUNNING -> scale(2) -> stop; appends its timings to `out`."""
    user = f"user{i}"
    t0 = time.monotonic()
    status, body = await client.request("POST", "/api/v1/clusters/", user, {})
    if status != 201:
        out["failed"].append((user, "create", status, body))
        return
    name = body["name"]
    deadline = t0 + TIMEOUT
    while time.monotonic() < deadline:
        status, c = await client.request("GET", f"/api/v1/clusters/{name}?wait", user)
        if status == 200 and c["status"] in ("RUNNING", "FAILED", "STOPPED"):
            break
    if not (status == 200 and c["status"] == "RUNNING"):
        out["failed"].append((user, "running", status, c))
        return
    out["running_ms"].append(1000 * (time.monotonic() - t0))
    try:
        token = await scheduler_token(api, ns, name)
    except RuntimeError as e:
        out["failed"].append((user, "token", None, str(e)))
        return
    t1 = time.monotonic()
    beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 2}
    status, _ = await client.request("POST", f"/api/v1/clusters/{name}/heartbeat", None, beat,
                                     headers={"Authorization": f"token {token}"})
    selector = f"dask.org/cluster-name=dask-{name},dask.org/component=worker"

    async def two_workers():
        pods = await api.request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")
        return len(pods["items"]) == 2
    if not await wait_until(two_workers, TIMEOUT):
        out["failed"].append((user, "scale", status, None))
    else:
        out["scale_ms"].append(1000 * (time.monotonic() - t1))
    status, _ = await client.request("DELETE", f"/api/v1/clusters/{name}", user)
    if status != 204:
        out["failed"].append((user, "stop", status, None))

    async def gone():
        return await api.status(f"{GROUP}/namespaces/{ns}/daskclusters/dask-{name}") == 404
    if not await wait_until(gone, TIMEOUT):
        out["failed"].append((user, "gone", None, None))


async def main():
    ns = unique(f"{ob.NAMESPACE}-load")
    api = ob.Api(os.environ["KUBECONFIG"])
    tmp = tempfile.mkdtemp(prefix="bench-load-")
    await ob.fresh_namespace(api, ns)
    op = operator(tmp, ns).start()
    gw = gateway(tmp, kubernetes_backend(ns)).start()
    client = Client(gw.address)
    out = {"running_ms": [], "scale_ms": [], "failed": []}
    try:
        t0 = time.monotonic()
        await asyncio.gather(*(one_user(i, client, api, ns, out) for i in range(U)))
        wall = time.monotonic() - t0
        gw.sample(), op.sample()
        left = await count_objects(api, ns)
    finally:
        await client.close()
        gw.stop()
        op.stop()
        await ob.clean_namespace(api, ns)
        await api.close()
    report(out, client.statuses, wall, gw, op, left, tmp)


def report(out, statuses, wall, gw, op, left, tmp):
    fmt = ob.fmt
    errors = sum(n for s, n in statuses.items() if not s.startswith(("2", "404")))
    print(f"\nLoad: {U} users at once, each create -> RUNNING -> scale(2) -> stop; "
          f"gateway (Kubernetes backend) + operator on the sim tier; {wall:.1f} s wall")
    p50, p99 = percentiles(out["running_ms"])
    print(f"  {'create -> RUNNING ms p50 / p99':52}{fmt(p50)} {fmt(p99)}   ({len(out['running_ms'])}/{U})")
    p50, p99 = percentiles(out["scale_ms"])
    print(f"  {'heartbeat(count=2) -> 2 worker pods ms p50 / p99':52}{fmt(p50)} {fmt(p99)}   ({len(out['scale_ms'])}/{U})")
    print(f"  {'HTTP statuses of everything else':52}{statuses}")
    print(f"  {'errors (non-2xx) / failed users':52}{errors:8d} {len(out['failed']):8d}")
    for f in out["failed"][:5]:
        print(f"    failed: {f}")
    print(f"  {'gateway peak RSS, VmHWM (MiB)':52}{fmt(gw.hwm)}")
    print(f"  {'operator peak RSS, VmHWM (MiB)':52}{fmt(op.hwm)}")
    print(f"  {'left right after the last DaskCluster went (pods: GC)':52}{left}")
    print(f"  logs: {tmp}")


if __name__ == "__main__":
    asyncio.run(main())
