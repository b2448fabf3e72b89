#!/usr/bin/env python3
"""Operator benchmark on the `sim` tier (kwok nodes): ours against the Python
dask-kubernetes operator (kopf, from PyPI), one after the other, in one run,
against the same manifests. Prints tables; asserts nothing.

    bench/operator.sh [N=1000] [WORKERS=4]   (the wrapper sets up the environment)

For each operator:

  * burst: N DaskClusters are created BEFORE the operator starts (an async
    HTTP client, BENCH_CONCURRENCY requests in flight), then the operator is
    started and timed from its start to every scheduler and worker pod
    created, and to every DaskCluster Running;
  * steady load (BENCH_RATE clusters a second for BENCH_DURATION seconds,
    0 to skip) with the operator already running: per cluster, p50 and p99
    from the create's response to all its pods created, and to Running;
  * API requests per cluster, from the API server's own /metrics: each
    operator runs under its own client certificate, matched by its own
    FlowSchema (apiserver_flowcontrol_dispatched_requests_total), so other
    clients (scheduler, kwok, controller-manager) are not counted; the
    verb/resource split (apiserver_request_total) has no client label, so it
    is the window's, attributable because the operators run one at a time;
  * what the control plane spent in the same window: CPU seconds of each
    component, mean latency of pod and Service creates, ClusterIP allocation.

Times come from watch events received by this process (metadata-only for
pods), so they include the watch's delivery, a few milliseconds.
"""

import asyncio
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import time

import aiohttp
import yaml

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", 1800))
RATE = float(os.environ.get("BENCH_RATE", 5))
DURATION = float(os.environ.get("BENCH_DURATION", 120))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", 64))
NAMESPACE = os.environ.get("BENCH_NAMESPACE", "bench")
CLUSTER_DIR = os.environ.get("DASK_RS_CLUSTER_DIR", "/tmp/dask-rs-cluster")
GROUP = "/apis/kubernetes.dask.org/v1"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"  # lists: as=...List


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


# ---------------------------------------------------------------- API client

class Api:
    """A small async client for the API server, from a kubeconfig with a client certificate."""

    def __init__(self, kubeconfig):
        with open(kubeconfig) as f:
            config = yaml.safe_load(f)
        context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        self.server = cluster["server"]
        tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
        tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=CONCURRENCY),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def request(self, method, path, body=None, headers=None, ok=(200, 201, 202)):
        for attempt in range(30):
            try:
                async with self.session.request(method, self.server + path, json=body, headers=headers) as r:
                    text = await r.text()
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # a pooled keep-alive connection the server had closed
                if attempt == 29:
                    raise
                continue
            if r.status != 429:  # e.g. a CRD's storage (re)initializing
                break
            await asyncio.sleep(1)
        if r.status not in ok and not (attempt and method == "POST" and r.status == 409):
            raise RuntimeError(f"{method} {path}: {r.status} {text[:300]}")
        return json.loads(text) if text and text[0] == "{" else text

    async def status(self, path):
        async with self.session.get(self.server + path) as r:
            return r.status

    async def watch(self, path, on_event, metadata_only=False):
        """Calls on_event(type, object, receive time) for every event, from a
        list on; lists again when the watch expires; runs until cancelled."""
        accept = METADATA_ONLY if metadata_only else "application/json"
        sep = "&" if "?" in path else "?"
        while True:
            listed = await self.request("GET", path, headers={"Accept": accept.replace("Metadata;", "MetadataList;")})
            for item in listed.get("items") or []:
                on_event("ADDED", item, time.monotonic())
            version = listed["metadata"]["resourceVersion"]
            url = f"{self.server}{path}{sep}watch=1&resourceVersion={version}&timeoutSeconds=3600"
            async with self.session.get(url, headers={"Accept": accept}) as r:
                async for line in r.content:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        if event["object"].get("code") == 410:  # expired: list again
                            break
                        raise RuntimeError(f"watch {path}: {event['object']}")
                    on_event(event["type"], event["object"], time.monotonic())

    async def metrics(self):
        return parse_metrics(await self.request("GET", "/metrics"))

    async def close(self):
        await self.session.close()


SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ([^ ]+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset(labels)): value}."""
    samples = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            name, labels, value = m.groups()
            samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def metric_delta(before, after, name, **match):
    """Sum over the samples of `name` whose labels include `match`: after - before."""
    want = set(match.items())

    def total(samples):
        return sum(v for (n, labels), v in samples.items() if n == name and want <= labels)
    return total(after) - total(before)


# ------------------------------------------------------------ control plane

COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def control_plane_cpu():
    """CPU seconds so far of each control-plane component this machine runs."""
    result = {}
    for name in COMPONENTS:
        try:
            with open(f"{CLUSTER_DIR}/pids/{name}.pid") as f:
                result[name] = cpu_seconds(int(f.read()))
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
    return result


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


class Window:
    """The API server's and control plane's counters over one measured window."""

    def __init__(self, api, flow_schema):
        self.api, self.flow_schema = api, flow_schema

    async def __aenter__(self):
        self.metrics0, self.cpu0, self.t0 = await self.api.metrics(), control_plane_cpu(), time.monotonic()
        return self

    async def __aexit__(self, *exc):
        self.metrics1, self.cpu1, self.t1 = await self.api.metrics(), control_plane_cpu(), time.monotonic()

    def delta(self, name, **match):
        return metric_delta(self.metrics0, self.metrics1, name, **match)

    def mean_ms(self, name, verbs=(None,), **match):
        """Mean of a histogram over the window, summed over `verbs` (POST and APPLY both create)."""
        def total(suffix):
            return sum(self.delta(name + suffix, **match, **({"verb": v} if v else {})) for v in verbs)
        count = total("_count")
        return 1000 * total("_sum") / count if count else float("nan")

    def summary(self, clusters):
        by_verb = {}
        for (name, labels), value in self.metrics1.items():
            if name != "apiserver_request_total":
                continue
            labels = dict(labels)
            if labels.get("resource") in ("pods", "services", "deployments", "replicasets", "daskclusters",
                                          "daskworkergroups"):
                key = f"{labels['verb']} {labels['resource']}{'/' + labels['subresource'] if labels.get('subresource') else ''}"
                before = self.metrics0.get((name, frozenset(labels.items())), 0)
                by_verb[key] = by_verb.get(key, 0) + value - before
        return {
            "seconds": self.t1 - self.t0,
            "requests_per_cluster": self.delta("apiserver_flowcontrol_dispatched_requests_total",
                                               flow_schema=self.flow_schema) / clusters,
            "window_requests_per_cluster": {k: v / clusters for k, v in sorted(by_verb.items()) if v / clusters >= 0.05},
            "cpu": {k: self.cpu1[k] - self.cpu0.get(k, 0) for k in self.cpu1},
            "pod_create_ms": self.mean_ms("apiserver_request_duration_seconds", ("POST", "APPLY"), resource="pods"),
            "service_create_ms": self.mean_ms("apiserver_request_duration_seconds", ("POST", "APPLY"),
                                              resource="services"),
            "clusterip_alloc_ms": self.mean_ms("kube_apiserver_clusterip_allocator_allocation_duration_seconds"),
        }


# ------------------------------------------------------------ progress

class Progress:
    """Per cluster: when its create returned, when its pods were all created, when it was Running."""

    def __init__(self):
        self.created_at, self.pods, self.all_pods_at, self.running_at = {}, {}, {}, {}
        self.scheduler_at, self.workers, self.workers_at = {}, {}, {}

    def on_pod(self, kind, pod, now):
        labels = pod["metadata"].get("labels", {})
        cluster = labels.get("dask.org/cluster-name")
        if kind != "ADDED" or not cluster or labels.get("dask.org/component") not in ("scheduler", "worker"):
            return
        if labels.get("dask.org/component") == "scheduler":
            self.scheduler_at.setdefault(cluster, now)
        else:
            workers = self.workers.setdefault(cluster, set())
            workers.add(pod["metadata"]["name"])
            if len(workers) >= WORKERS:
                self.workers_at.setdefault(cluster, now)
        names = self.pods.setdefault(cluster, set())
        names.add(pod["metadata"]["name"])
        if len(names) >= WORKERS + 1 and cluster not in self.all_pods_at:
            self.all_pods_at[cluster] = now

    def on_cluster(self, kind, cluster, now):
        name = cluster["metadata"]["name"]
        if (cluster.get("status") or {}).get("phase") == "Running" and name not in self.running_at:
            self.running_at[name] = now

    def done(self, names):
        return all(n in self.running_at and n in self.all_pods_at for n in names)


async def watching(api, ns, progress):
    return [
        asyncio.create_task(api.watch(f"/api/v1/namespaces/{ns}/pods?labelSelector=dask.org%2Fcluster-name",
                                      progress.on_pod, metadata_only=True)),
        asyncio.create_task(api.watch(f"{GROUP}/namespaces/{ns}/daskclusters", progress.on_cluster)),
    ]


async def create_cluster(api, ns, name, progress, limit):
    async with limit:
        await api.request("POST", f"{GROUP}/namespaces/{ns}/daskclusters", manifest(name))
    progress.created_at[name] = time.monotonic()


async def cancel(tasks):
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for(check, proc, deadline, watches=()):
    while not check() and time.monotonic() < deadline and proc.returncode is None:
        for w in watches:
            if w.done():
                w.result()  # a failed watch fails the run rather than reading as a timeout
        await asyncio.sleep(0.05)
    return check()


# ------------------------------------------------------------ one operator

async def start_operator(cmd, ns, kubeconfig, log_path):
    log = open(log_path, "w")
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    return await asyncio.create_subprocess_exec(*cmd, ns, stdout=log, stderr=subprocess.STDOUT, env=env)


async def stop(proc):
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def clean_namespace(api, ns):
    """Deletes the namespace; strips finalizers first, as no operator is left to honour them."""
    for resource in ("daskclusters", "daskworkergroups"):
        items = (await api.request("GET", f"{GROUP}/namespaces/{ns}/{resource}", ok=(200, 404)))
        for item in items.get("items", []) if isinstance(items, dict) else []:
            if item["metadata"].get("finalizers"):
                await api.request("PATCH", f"{GROUP}/namespaces/{ns}/{resource}/{item['metadata']['name']}",
                                  {"metadata": {"finalizers": None}}, ok=(200, 404),
                                  headers={"Content-Type": "application/merge-patch+json"})
    await api.request("DELETE", f"/api/v1/namespaces/{ns}", ok=(200, 202, 404))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # the next measurement starts on a quiet control plane
        if await api.status(f"/api/v1/namespaces/{ns}") == 404:
            return
        await asyncio.sleep(1)


async def fresh_namespace(api, ns):
    await clean_namespace(api, ns)
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})


async def burst(api, label, cmd, kubeconfig, flow_schema, ns):
    await fresh_namespace(api, ns)
    progress = Progress()
    watches = await watching(api, ns, progress)
    names = [f"c{i:04d}" for i in range(N)]
    limit = asyncio.Semaphore(CONCURRENCY)
    t = time.monotonic()
    await asyncio.gather(*(create_cluster(api, ns, n, progress, limit) for n in names))
    create_s = time.monotonic() - t
    async with Window(api, flow_schema) as window:
        t0 = time.monotonic()
        proc = await start_operator(cmd, ns, kubeconfig, f"/tmp/bench-{ns}.log")
        try:
            await wait_for(lambda: len(progress.all_pods_at) >= N, proc, t0 + TIMEOUT, watches)
            await wait_for(lambda: progress.done(names), proc, t0 + TIMEOUT, watches)
            rss = peak_rss_mib(proc.pid) if proc.returncode is None else float("nan")
            op_cpu = cpu_seconds(proc.pid) if proc.returncode is None else float("nan")
        finally:
            await stop(proc)
    await cancel(watches)
    all_pods = max(progress.all_pods_at.values()) - t0 if len(progress.all_pods_at) >= N else None
    running = max(progress.running_at.values()) - t0 if len(progress.running_at) >= N else None
    await clean_namespace(api, ns)
    return {"label": label, "create_s": create_s, "all_pods": all_pods, "running": running,
            "op_cpu": op_cpu, "rss": rss, **window.summary(N)}


def percentiles(values):
    if not values:
        return None, None
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(0.99 * len(values)))]


async def steady(api, label, cmd, kubeconfig, flow_schema, ns):
    await fresh_namespace(api, ns)
    progress = Progress()
    watches = await watching(api, ns, progress)
    proc = await start_operator(cmd, ns, kubeconfig, f"/tmp/bench-{ns}.log")
    count = int(RATE * DURATION)
    names = [f"s{i:04d}" for i in range(count)]
    try:
        # One cluster first, so the operator's start-up is not in any cluster's time.
        warm = "warm-up"
        await create_cluster(api, ns, warm, progress, asyncio.Semaphore(1))
        await wait_for(lambda: warm in progress.all_pods_at, proc, time.monotonic() + 300, watches)
        limit = asyncio.Semaphore(CONCURRENCY)
        async with Window(api, flow_schema) as window:
            start, tasks = time.monotonic(), []
            for i, name in enumerate(names):  # on a fixed schedule, whatever the creates' latency
                await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
                tasks.append(asyncio.create_task(create_cluster(api, ns, name, progress, limit)))
            await asyncio.gather(*tasks)
            await wait_for(lambda: progress.done(names), proc, time.monotonic() + min(TIMEOUT, 120), watches)
    finally:
        await stop(proc)
    await cancel(watches)
    await clean_namespace(api, ns)

    def latencies(at):
        return [1000 * (at[n] - progress.created_at[n]) for n in names if n in at]
    pods_ms, running_ms = latencies(progress.workers_at), latencies(progress.running_at)
    return {"label": label, "clusters": count, "scheduler_ms": percentiles(latencies(progress.scheduler_at)),
            "pods_ms": percentiles(pods_ms), "pods_n": len(pods_ms),
            "running_ms": percentiles(running_ms), "running_n": len(running_ms), **window.summary(count)}


# ------------------------------------------------------------ report

def fmt(v, width=8, digits=1):
    return f"{'timeout':>{width}}" if v is None else f"{v:{width}.{digits}f}"


def print_control_plane(results):
    print(f"\n  control plane in the same window{'':6}" + "".join(f"{r['label']:>24}" for r in results))
    rows = [("window (s)", lambda r: r["seconds"])]
    rows += [(f"{c} CPU s", lambda r, c=c: r["cpu"].get(c, float("nan"))) for c in COMPONENTS]
    rows += [("mean pod POST/APPLY (ms)", lambda r: r["pod_create_ms"]),
             ("mean Service POST/APPLY (ms)", lambda r: r["service_create_ms"]),
             ("mean ClusterIP allocation (ms)", lambda r: r["clusterip_alloc_ms"]),
             ("API requests / cluster (own FlowSchema)", lambda r: r["requests_per_cluster"])]
    for name, get in rows:
        print(f"  {name:38}" + "".join(f"{get(r):24.2f}" for r in results))
    keys = sorted({k for r in results for k in r["window_requests_per_cluster"]})
    print("  per cluster, by verb/resource, every client in the window (scheduler, kwok, others on a shared plane):")
    for k in keys:
        print(f"    {k:36}" + "".join(f"{r['window_requests_per_cluster'].get(k, 0):24.2f}" for r in results))


def report_burst(results):
    print(f"\nBurst: {N} DaskClusters x {WORKERS} workers created before the operator starts "
          f"(created in {results[0]['create_s']:.1f} s, {CONCURRENCY} in flight); seconds from the operator's start")
    print(f"{'operator':24} {'all pods':>8} {'Running':>8} {'CPU s':>8} {'peak MiB':>8} {'req/cl':>8}")
    for r in results:
        print(f"{r['label']:24} {fmt(r['all_pods'])} {fmt(r['running'])} {fmt(r['op_cpu'])} {fmt(r['rss'])} "
              f"{fmt(r['requests_per_cluster'])}")
    if len(results) == 2:
        for key, what in (("all_pods", "all pods"), ("running", "all Running")):
            rs, py = (r[key] for r in results)
            if rs and py:
                print(f"speed-up to {what}: {py / rs:.1f}x")
            elif rs:  # theirs timed out: the ratio is at least this
                print(f"speed-up to {what}: > {TIMEOUT / rs:.1f}x (dask-kubernetes timed out at {TIMEOUT:.0f} s)")
    print_control_plane(results)


def report_steady(results):
    print(f"\nSteady load: {RATE:g} DaskClusters/s for {DURATION:g} s x {WORKERS} workers, operator running; "
          "ms per cluster from its create's response to its scheduler pod, all its worker pods, Running")
    print(f"{'operator':24} {'sched p50':>9} {'sched p99':>9} {'wkrs p50':>9} {'wkrs p99':>9} "
          f"{'Run p50':>9} {'Run p99':>9} {'done':>11}")
    for r in results:
        (s50, s99), (p50, p99), (r50, r99) = r["scheduler_ms"], r["pods_ms"], r["running_ms"]
        print(f"{r['label']:24} {fmt(s50, 9)} {fmt(s99, 9)} {fmt(p50, 9)} {fmt(p99, 9)} {fmt(r50, 9)} {fmt(r99, 9)} "
              f"{min(r['pods_n'], r['running_n']):>5}/{r['clusters']:<5}")
    print_control_plane(results)


async def main():
    operators = {
        "rs": ("dask-rs (Rust)", os.environ["DASK_OPERATOR_CMD"].split() + ["--namespace"]),
        "py": ("dask-kubernetes (kopf)", [sys.executable, "-m", "kopf", "run", "--standalone",
                                          "-m", "dask_kubernetes.operator.controller", "--namespace"]),
    }
    # BENCH_OPERATORS=rs measures ours alone (e.g. while tuning); the ratio needs both.
    chosen = os.environ.get("BENCH_OPERATORS", "rs,py").split(",")
    api = Api(os.environ["KUBECONFIG"])
    bursts, steadies = [], []
    try:
        for key in chosen:
            label, cmd = operators[key]
            kubeconfig, flow_schema = os.environ[f"BENCH_KUBECONFIG_{key.upper()}"], f"bench-operator-{key}"
            if N:
                bursts.append(await burst(api, label, cmd, kubeconfig, flow_schema, f"{NAMESPACE}-{key}"))
                print(json.dumps(bursts[-1]), file=sys.stderr)
            if RATE and DURATION:
                steadies.append(await steady(api, label, cmd, kubeconfig, flow_schema, f"{NAMESPACE}-{key}-steady"))
                print(json.dumps(steadies[-1]), file=sys.stderr)
    finally:
        await api.close()
    if bursts:
        report_burst(bursts)
    if steadies:
        report_steady(steadies)


if __name__ == "__main__":
    asyncio.run(main())
