#!/usr/bin/env python3
"""Chaos check: create/scale/stop churn through our gateway (Kubernetes
backend) and operator on the `sim` tier, while the operator and then the
gateway are killed with SIGKILL and restarted (once each). Prints what held.

    bench/chaos.sh [DURATION=60] [LOOPS=4]

Timeline (seconds from the churn's start): 0.25 x DURATION kill -9 the
operator, restart it 3 s later; 0.5 x DURATION kill -9 the gateway, restart
it 2 s later on the same port and config. With BENCH_CHAOS_APISERVER=1, at
0.75 x DURATION the shared kube-apiserver is killed and started again with
`tests/k8s/cluster up sim` (off by default: the sim tier is shared, and its
absence would fail other people's runs).

Churn: LOOPS users, each create -> RUNNING -> heartbeat(count=2) -> stop,
again; a stop the gateway did not answer is retried for 60 s. Every cluster
name a create answered (201) is "told". At the end, after the churn and 10 s:

  * every told cluster is gone (stopped) or is RUNNING, or FAILED with a reason;
  * no orphan: no pod, Service or live Secret (history records apart) in the
    namespace whose DaskCluster does not exist, once every told cluster has
    been stopped;
  * no 5xx other than 503 with Retry-After; connection errors while the
    gateway was dead are counted apart (expected).
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simgw import (GROUP, Client, count_objects, free_port, gateway, kubernetes_backend, operator,
                   scheduler_token, unique)
import operator_bench as ob

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 60
LOOPS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
ROOT = Path(__file__).resolve().parents[1]


async def stop_cluster(client, user, name):
    """DELETE until the gateway answers 204 or 404 (60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _ = await client.request("DELETE", f"/api/v1/clusters/{name}", user)
        if status in (204, 404):
            return True
        await asyncio.sleep(1)
    return False


async def cycle(client, api, ns, user, told, end):
    status, body = await client.request("POST", "/api/v1/clusters/", user, {})
    if status != 201:
        await asyncio.sleep(1)
        return
    name = body["name"]
    told[name] = user
    deadline = time.monotonic() + 60
    while time.monotonic() < min(deadline, end + 30):
        status, c = await client.request("GET", f"/api/v1/clusters/{name}?wait", user)
        if status == 200 and c["status"] != "PENDING":
            break
        if status != 200:
            await asyncio.sleep(1)
    if status == 200 and c["status"] == "RUNNING":
        try:
            token = await scheduler_token(api, ns, name)
            beat = {"scheduler_address": "tls://10.0.0.1:8786", "api_address": "http://10.0.0.1:8788", "count": 2}
            await client.request("POST", f"/api/v1/clusters/{name}/heartbeat", None, beat,
                                 headers={"Authorization": f"token {token}"})
        except RuntimeError:
            pass
        await asyncio.sleep(1)
    await stop_cluster(client, user, name)


def kill_apiserver():
    """SIGKILL the shared kube-apiserver and start it again (only with BENCH_CHAOS_APISERVER=1)."""
    state = os.environ.get("DASK_RS_CLUSTER_DIR", "/tmp/dask-rs-cluster")
    pid = int(Path(f"{state}/pids/kube-apiserver.pid").read_text())
    os.kill(pid, 9)
    time.sleep(3)
    subprocess.run([str(ROOT / "tests/k8s/cluster"), "up", "sim"], check=True, capture_output=True)


async def faults(op, gw, events, t0):
    """The kills and restarts, on the timeline; appends (t, what) to events."""
    async def at(fraction):
        await asyncio.sleep(max(0.0, t0 + fraction * DURATION - time.monotonic()))
    await at(0.25)
    op.kill9()
    events.append((time.monotonic() - t0, "operator killed (SIGKILL)"))
    await asyncio.sleep(3)
    op.start()
    events.append((time.monotonic() - t0, "operator restarted"))
    await at(0.5)
    gw.kill9()
    events.append((time.monotonic() - t0, "gateway killed (SIGKILL)"))
    await asyncio.sleep(2)
    await asyncio.to_thread(gw.start)
    events.append((time.monotonic() - t0, "gateway restarted"))
    if os.environ.get("BENCH_CHAOS_APISERVER") == "1":
        await at(0.75)
        events.append((time.monotonic() - t0, "kube-apiserver killed"))
        await asyncio.to_thread(kill_apiserver)
        events.append((time.monotonic() - t0, "kube-apiserver back"))


async def verdict(client, api, ns, told):
    """Every told cluster's state now: gone, RUNNING, FAILED (with reason?), or other."""
    states = {}
    for name, user in told.items():
        status, c = await client.request("GET", f"/api/v1/clusters/{name}", user, record=False)
        if await api.status(f"{GROUP}/namespaces/{ns}/daskclusters/dask-{name}") == 404 and (
                status == 404 or (status == 200 and c["status"] == "STOPPED")):
            key = "stopped (gone)"
        elif status == 200 and c["status"] == "FAILED":
            key = "FAILED with a reason" if c.get("reason") or c.get("message") else "FAILED without a reason"
        elif status == 200:
            key = c["status"]
        else:
            key = f"HTTP {status}"
        states[key] = states.get(key, 0) + 1
    return states


async def orphans(api, ns):
    """Pods, Services and live Secrets whose DaskCluster does not exist."""
    clusters = {d["metadata"]["name"] for d in (await api.request("GET", f"{GROUP}/namespaces/{ns}/daskclusters"))["items"]}
    out = {}
    for kind in ("pods", "services", "secrets"):
        found = 0
        for item in (await api.request("GET", f"/api/v1/namespaces/{ns}/{kind}"))["items"]:
            meta = item["metadata"]
            labels = meta.get("labels") or {}
            if labels.get("gateway.dask.org/record") or meta["name"].endswith("-logs") or meta["name"] == "kube-root-ca.crt":
                continue
            owner = labels.get("dask.org/cluster-name") or (
                f"dask-{labels['gateway.dask.org/cluster']}" if "gateway.dask.org/cluster" in labels else None)
            if owner is None or owner not in clusters:
                found += 1
        out[kind] = found
    return out


async def main():
    ns = unique(f"{ob.NAMESPACE}-chaos")
    api = ob.Api(os.environ["KUBECONFIG"])
    tmp = tempfile.mkdtemp(prefix="bench-chaos-")
    await ob.fresh_namespace(api, ns)
    op = operator(tmp, ns).start()
    gw = gateway(tmp, kubernetes_backend(ns), port=free_port()).start()
    client = Client(gw.address)
    told, events = {}, []
    try:
        t0 = time.monotonic()
        end = t0 + DURATION

        async def loop(i):
            while time.monotonic() < end:
                await cycle(client, api, ns, f"chaos{i}", told, end)
        await asyncio.gather(faults(op, gw, events, t0), *(loop(i) for i in range(LOOPS)))
        await asyncio.sleep(10)
        states = await verdict(client, api, ns, told)
        # Stop whatever is left, then look for orphans.
        for name, user in told.items():
            await stop_cluster(client, user, name)
        await asyncio.sleep(10)
        left_orphans = await orphans(api, ns)
        left = await count_objects(api, ns)
    finally:
        await client.close()
        gw.stop()
        op.stop()
        await ob.clean_namespace(api, ns)
        await api.close()
    report(told, events, states, left_orphans, left, client.statuses, tmp)


def report(told, events, states, left_orphans, left, statuses, tmp):
    bad5xx = {s: n for s, n in statuses.items() if s.startswith("5") and s != "503+Retry-After"}
    print(f"\nChaos: {DURATION:g} s churn, {LOOPS} users, Kubernetes backend + operator on the sim tier")
    for t, what in events:
        print(f"  t={t:6.1f} s  {what}")
    print(f"  {'clusters a create answered (told)':48}{len(told)}")
    print(f"  {'their states 10 s after the churn':48}{states}")
    print(f"  {'HTTP statuses':48}{statuses}")
    print(f"  {'5xx other than 503 with Retry-After':48}{bad5xx or 'none'}")
    print(f"  {'orphans after stopping every told cluster':48}{left_orphans}")
    print(f"  {'namespace after stopping every told cluster':48}{left}")
    print(f"  logs: {tmp}")


if __name__ == "__main__":
    asyncio.run(main())
