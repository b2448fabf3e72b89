#!/usr/bin/env python3
"""Scale benchmark on the `sim` tier (kwok nodes): our operator and gateway
with N DaskClusters in one namespace. Prints one table; asserts nothing.

    bench/scale.sh [N=10000] [WORKERS=2]   (the wrapper sets up the environment)

In one run, in this order:

  1. API server write rate (the yardstick): this process creates N x (1 +
     WORKERS) plain pods and N Services directly, BENCH_CONCURRENCY in
     flight, timed to the last create's response; then deletes them.
  2. Unloaded latency: with the operator running on an empty namespace,
     PROBES DaskClusters one at a time (0.2 s apart): from each create's
     response to its scheduler pod's ADDED watch event; p50/p99.
  3. Burst: N DaskClusters created with the operator running,
     BENCH_CONCURRENCY in flight: the time from the first create to every
     scheduler and worker pod existing (compared with 1.), p50/p99 from a
     create's response to its scheduler pod (starvation: compared with 2.),
     API requests per cluster from the operator's own FlowSchema, against
     the minimum the objects need (see MINIMUM).
  4. Loaded latency: with the N clusters settled, PROBES more, as in 2.
  5. Gateway listing: our gateway, Kubernetes backend, on the namespace;
     every DaskCluster of 3. is a copy of one the gateway made itself (its
     labels and annotations, for user `alice`), so the gateway lists all N
     as alice's: `GET /api/v1/clusters/` p50/p99 over LIST_REQUESTS requests.

Throughout, the operator's VmRSS is sampled every 0.5 s; its VmHWM is read
at the end; the gateway's likewise.
"""

import asyncio
import copy
import os
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests/gateway"))
import operator_bench as ob  # noqa: E402  (N, WORKERS, CONCURRENCY from argv/env as there)
from gatewaylib import Gateway  # noqa: E402

N, WORKERS, CONCURRENCY = ob.N, ob.WORKERS, ob.CONCURRENCY
PROBES = int(os.environ.get("BENCH_PROBES", 50))
LIST_REQUESTS = int(os.environ.get("BENCH_LIST_REQUESTS", 200))
TIMEOUT = ob.TIMEOUT
NS = f"{ob.NAMESPACE}-scale-{uuid.uuid4().hex[:6]}"
FLOW_SCHEMA = "bench-operator-rs"
# The fewest API requests per cluster the objects need: creates of the
# scheduler pod, its Service, the default DaskWorkerGroup, WORKERS worker
# pods, and one status write to Running (the DaskCluster's).
MINIMUM = 3 + WORKERS + 1


# ------------------------------------------------------------ memory

class RssSampler(threading.Thread):
    """Samples a process's VmRSS (KiB) every `period` s until stopped."""

    def __init__(self, pid, period=0.5):
        super().__init__(daemon=True)
        self.pid, self.period, self.samples, self.stopped = pid, period, [], threading.Event()
        self.hwm_mib = float("nan")

    def read(self, key):
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

    def run(self):
        while not self.stopped.wait(self.period):
            try:
                self.samples.append((time.monotonic(), self.read("VmRSS")))
                self.hwm_mib = self.read("VmHWM")
            except (OSError, StopIteration):
                return

    def stop(self):
        self.stopped.set()
        self.join()
        return self.hwm_mib


# ------------------------------------------------------------ phases

async def write_rate(api):
    """Seconds to create N x (1+WORKERS) plain pods and N Services directly."""
    ns = NS + "-yardstick"
    await ob.fresh_namespace(api, ns)
    manifest = ob.manifest("x")
    pod_spec = manifest["spec"]["scheduler"]["spec"]
    svc_spec = {**manifest["spec"]["scheduler"]["service"], "selector": {"app": "none"}}
    limit = asyncio.Semaphore(CONCURRENCY)

    async def create(path, body):
        async with limit:
            await api.request("POST", path, body)
    jobs = [create(f"/api/v1/namespaces/{ns}/pods", {"metadata": {"name": f"p{i}"}, "spec": pod_spec})
            for i in range(N * (1 + WORKERS))]
    jobs += [create(f"/api/v1/namespaces/{ns}/services", {"metadata": {"name": f"s{i}"}, "spec": svc_spec})
             for i in range(N)]
    t0 = time.monotonic()
    await asyncio.gather(*jobs)
    seconds = time.monotonic() - t0
    await ob.clean_namespace(api, ns)
    return seconds


def template_from(dc):
    """A DaskCluster the gateway made, as a template: server fields removed."""
    t = copy.deepcopy(dc)
    t.pop("status", None)
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "finalizers",
                "ownerReferences"):
        t["metadata"].pop(key, None)
    t["spec"]["worker"]["replicas"] = WORKERS
    return t


def clone(template, name):
    """The template renamed: gateway cluster `name`, DaskCluster `dask-<name>`."""
    body = copy.deepcopy(template)
    old = template["metadata"]["labels"]["gateway.dask.org/cluster"]
    body = ob.json.loads(ob.json.dumps(body).replace(old, name))
    return body


async def probe(api, progress, prefix, template):
    """PROBES clusters one at a time: ms from each create's response to its scheduler pod."""
    names = [f"{prefix}{uuid.uuid4().hex[:24]}" for _ in range(PROBES)]
    for name in names:
        await api.request("POST", f"{ob.GROUP}/namespaces/{NS}/daskclusters", clone(template, name))
        progress.created_at[f"dask-{name}"] = time.monotonic()
        await asyncio.sleep(0.2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(f"dask-{n}" in progress.scheduler_at for n in names):
        await asyncio.sleep(0.05)
    return ob.percentiles([1000 * (progress.scheduler_at[f"dask-{n}"] - progress.created_at[f"dask-{n}"])
                           for n in names if f"dask-{n}" in progress.scheduler_at])


async def burst(api, progress, template):
    """N clusters with the operator running: (seconds to every pod, scheduler ms p50/p99)."""
    names = [f"b{uuid.uuid4().hex[:24]}" for _ in range(N)]
    limit = asyncio.Semaphore(CONCURRENCY)

    async def create(name):
        async with limit:
            await api.request("POST", f"{ob.GROUP}/namespaces/{NS}/daskclusters", clone(template, name))
        progress.created_at[f"dask-{name}"] = time.monotonic()
    t0 = time.monotonic()
    await asyncio.gather(*(create(n) for n in names))
    create_s = time.monotonic() - t0
    dcs = [f"dask-{n}" for n in names]
    deadline = t0 + TIMEOUT
    while time.monotonic() < deadline and not all(d in progress.all_pods_at for d in dcs):
        await asyncio.sleep(0.1)
    done = [progress.all_pods_at[d] for d in dcs if d in progress.all_pods_at]
    all_pods = max(done) - t0 if len(done) == N else None
    sched = ob.percentiles([1000 * (progress.scheduler_at[d] - progress.created_at[d])
                            for d in dcs if d in progress.scheduler_at])
    return {"create_s": create_s, "all_pods_s": all_pods, "pods_done": len(done), "scheduler_ms": sched}


def time_listing(gw):
    """ms of GET /api/v1/clusters/ as alice, LIST_REQUESTS times: (count listed, p50, p99)."""
    auth = "Basic " + b64encode(b"alice:").decode()
    times, count = [], 0
    for _ in range(LIST_REQUESTS):
        req = urllib.request.Request(gw.address + "/api/v1/clusters/", headers={"Authorization": auth})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        times.append(1000 * (time.perf_counter() - t))
        count = len(ob.json.loads(body))
    return (count, *ob.percentiles(times))


def start_gateway(tmp):
    backend = (f'[backend]\ntype = "kubernetes"\nnamespace = "{NS}"\nimage = "dask-rs/worker:test"\n'
               f'api_url = "http://dask-gateway.{NS}:8000/api"\ninstance = "bench-{NS}"\n')
    return Gateway(Path(tmp), "[cluster]\nstart_timeout = 600\n", backend=backend)


async def make_template(api, gw):
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {})
    assert status == 201, (status, body)
    dc = await api.request("GET", f"{ob.GROUP}/namespaces/{NS}/daskclusters/dask-{body['name']}")
    return template_from(dc)


# ------------------------------------------------------------ run

async def main():
    api = ob.Api(os.environ["KUBECONFIG"])
    tmp = tempfile.mkdtemp(prefix="bench-scale-")
    result = {}
    try:
        result["yardstick_s"] = await write_rate(api)
        await ob.fresh_namespace(api, NS)
        progress = ob.Progress()
        watches = await ob.watching(api, NS, progress)
        gw = start_gateway(tmp)
        gw_rss = RssSampler(gw.proc.pid)
        gw_rss.start()
        template = await make_template(api, gw)
        op = await ob.start_operator(os.environ["DASK_OPERATOR_CMD"].split() + ["--namespace"], NS,
                                     os.environ["BENCH_KUBECONFIG_RS"], f"{tmp}/operator.log")
        op_rss = RssSampler(op.pid)
        op_rss.start()
        try:
            result["unloaded_ms"] = await probe(api, progress, "u", template)
            async with ob.Window(api, FLOW_SCHEMA) as window:
                result["burst"] = await burst(api, progress, template)
            result["requests"] = window.summary(N)
            result["loaded_ms"] = await probe(api, progress, "l", template)
            result["listing"] = time_listing(gw)
        finally:
            result["op_hwm"], result["op_samples"] = op_rss.stop(), op_rss.samples
            result["gw_hwm"] = gw_rss.stop()
            await ob.stop(op)
            gw.stop()
            await ob.cancel(watches)
        print(f"operator log: {tmp}/operator.log, gateway log: {gw.log_path}", file=sys.stderr)
    finally:
        await ob.clean_namespace(api, NS)
        await api.close()
    print(ob.json.dumps({k: v for k, v in result.items() if k != "op_samples"}), file=sys.stderr)
    report(result)


def report(r):
    b, fmt = r["burst"], ob.fmt
    print(f"\nScale: {N} DaskClusters x {WORKERS} workers, operator running, {CONCURRENCY} creates in flight")
    print(f"  {'API server write rate: N x (1+W) pods + N Services, direct (s)':66}{fmt(r['yardstick_s'])}")
    print(f"  {'burst: first create to every scheduler and worker pod (s)':66}{fmt(b['all_pods_s'])}"
          f"   ({b['pods_done']}/{N} complete; creates took {b['create_s']:.1f} s)")
    for label, (p50, p99) in (("unloaded, empty namespace", r["unloaded_ms"]),
                              ("during the burst", b["scheduler_ms"]),
                              (f"after the burst, {N} clusters settled", r["loaded_ms"])):
        print(f"  {'create -> scheduler pod ms p50 / p99, ' + label:66}{fmt(p50)} {fmt(p99)}")
    u99, l99 = r["unloaded_ms"][1], r["loaded_ms"][1]
    if u99 and l99:
        print(f"  {'starvation: settled p99 / unloaded p99 (goal <= 2)':66}{fmt(l99 / u99, digits=2)}")
    print(f"  {'operator API requests / cluster (own FlowSchema) vs minimum':66}"
          f"{fmt(r['requests']['requests_per_cluster'])} {MINIMUM:8d}")
    print(f"  {'operator peak RSS, VmHWM (MiB)':66}{fmt(r['op_hwm'])}")
    count, p50, p99 = r["listing"]
    print(f"  {f'gateway GET /api/v1/clusters/ ms p50 / p99 ({count} listed)':66}{fmt(p50)} {fmt(p99)}")
    print(f"  {'gateway peak RSS, VmHWM (MiB)':66}{fmt(r['gw_hwm'])}")
    print("  per cluster, by verb/resource, every client in the burst window:")
    for k, v in r["requests"]["window_requests_per_cluster"].items():
        print(f"    {k:40}{v:8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
