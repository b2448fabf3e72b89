"""What the load, soak and chaos benches share: our gateway (Kubernetes or
local backend) and operator as child processes, an async gateway client that
records every response, and counters of what a namespace or process holds."""

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from base64 import b64decode, b64encode
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
GROUP = "/apis/kubernetes.dask.org/v1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(values):
    """(p50, p99) of a list, (None, None) when empty."""
    if not values:
        return None, None
    values = sorted(values)
    return values[len(values) // 2], values[min(len(values) - 1, int(0.99 * len(values)))]


def vm(pid, key):
    """A /proc/<pid>/status field in MiB (VmRSS, VmHWM); NaN when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024
    except (OSError, StopIteration):
        return float("nan")


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def listening_ports(pid):
    """TCP ports the process listens on (from its sockets' inodes)."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")}
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def descendants(pid):
    """Pids of every live descendant of `pid`."""
    children = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] not in "ZX":
                    children.setdefault(int(stat[1]), []).append(int(p.name))
            except (OSError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Proc:
    """A child process (gateway or operator) with its log; restartable, killable."""

    def __init__(self, argv, log_path, env=None, ready_url=None):
        self.argv, self.log_path, self.env, self.ready_url = argv, log_path, env or {}, ready_url
        self.proc = None
        self.hwm = 0.0

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RUST_LOG": "info", **self.env})
        log.close()
        if self.ready_url:
            import urllib.request
            deadline = time.time() + 60
            while time.time() < deadline:
                assert self.proc.poll() is None, f"{self.argv[0]} exited, see {self.log_path}"
                try:
                    urllib.request.urlopen(self.ready_url, timeout=1)
                    return self
                except OSError:
                    time.sleep(0.1)
            raise RuntimeError(f"{self.argv[0]} did not answer {self.ready_url}")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def sample(self):
        """(VmRSS MiB); keeps the largest VmHWM seen across restarts."""
        self.hwm = max(self.hwm, vm(self.pid, "VmHWM") or 0)
        return vm(self.pid, "VmRSS")

    def kill9(self):
        self.sample()
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.sample()
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def gateway(tmp, backend, port=None, extra=""):
    """Our gateway on a loopback port with `backend` (a TOML [backend] table)."""
    port = port or free_port()
    config = Path(tmp) / f"gateway-{port}.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\n[cluster]\nstart_timeout = 120\n{extra}\n{backend}')
    p = Proc([os.environ["DASK_GATEWAY_BIN"], "--config", str(config)], Path(tmp) / "gateway.log",
             ready_url=f"http://127.0.0.1:{port}/api/health")
    p.address = f"http://127.0.0.1:{port}"
    return p


def kubernetes_backend(ns):
    return (f'[backend]\ntype = "kubernetes"\nnamespace = "{ns}"\nimage = "dask-rs/worker:test"\n'
            f'api_url = "http://dask-gateway.{ns}:8000/api"\ninstance = "bench-{ns}"\n')


def local_backend(tmp):
    dask = Path(sys.executable).parent / "dask"
    return f'[backend]\ntype = "local"\ndask = "{dask}"\nstate_dir = "{tmp}/state"\n'


def operator(tmp, ns):
    """Our operator on namespace `ns`, as the bench's own user (its FlowSchema)."""
    argv = os.environ["DASK_OPERATOR_CMD"].split() + ["--namespace", ns]
    return Proc(argv, Path(tmp) / "operator.log", env={"KUBECONFIG": os.environ.get("BENCH_KUBECONFIG_RS",
                                                                                       os.environ["KUBECONFIG"])})


class Client:
    """An async HTTP client of the gateway that records every status code (and
    whether a 503 carried Retry-After); connection errors count as status 0."""

    def __init__(self, address):
        self.address = address
        self.statuses = {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def request(self, method, path, user, body=None, headers=None, record=True):
        h = {"Authorization": "Basic " + b64encode(f"{user}:".encode()).decode(), **(headers or {})}
        try:
            async with self.session.request(method, self.address + path, json=body, headers=h) as r:
                text = await r.text()
                status = r.status
                key = "503+Retry-After" if status == 503 and "Retry-After" in r.headers else str(status)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status, text, key = 0, "", "connection error"
        if record:
            self.statuses[key] = self.statuses.get(key, 0) + 1
        try:
            import json
            return status, (json.loads(text) if text else None)
        except ValueError:
            return status, text

    async def close(self):
        await self.session.close()


async def scheduler_token(api, ns, name):
    """The API token the gateway gave cluster `name`'s scheduler (its Secret)."""
    secret = await api.request("GET", f"/api/v1/namespaces/{ns}/secrets/dask-{name}-gateway")
    data = secret.get("data") or {}
    if "api-token" not in data:
        raise RuntimeError(f"secret dask-{name}-gateway has no api-token (keys: {sorted(data)})")
    return b64decode(data["api-token"]).decode()


async def count_objects(api, ns):
    """How many pods, Services, Secrets, DaskClusters the namespace holds (records excluded)."""
    out = {}
    for kind, path in (("pods", f"/api/v1/namespaces/{ns}/pods"), ("services", f"/api/v1/namespaces/{ns}/services"),
                       ("secrets", f"/api/v1/namespaces/{ns}/secrets"),
                       ("daskclusters", f"{GROUP}/namespaces/{ns}/daskclusters")):
        items = (await api.request("GET", path))["items"]
        if kind == "secrets":
            live = [i for i in items if (i["metadata"].get("labels") or {}).get("gateway.dask.org/record") is None
                    and not i["metadata"]["name"].endswith("-logs")]
            out["secrets (live, not history records)"] = len(live)
            out["secrets (history records + logs)"] = len(items) - len(live)
        else:
            out[kind] = len(items)
    return out


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
