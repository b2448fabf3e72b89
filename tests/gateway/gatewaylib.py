"""The real `dask-gateway` binary (built by cargo) on a loopback port, with a
config file written per test: by default its clusters run as local `dask`
processes from the test venv."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def gateway_bin():
    default = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/dask-rs/target")) / "debug/dask-gateway"
    return os.environ.get("DASK_GATEWAY_BIN", str(default))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_under(directory, name=None):
    """Pids of the live processes of a state directory's clusters (or of
    cluster `name`'s only): working directory under its `clusters/<name>`,
    or the cluster's name in the command line or environment."""
    base = os.path.join(str(directory), "clusters")
    base = os.path.join(base, name) if name else base
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                continue
            cwd = os.readlink(proc / "cwd")
            mine = cwd == base or cwd.startswith(base + "/")
            if not mine and name:
                text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
                mine = name.encode() in text
        except (OSError, IndexError):
            continue
        if mine:
            found.add(int(proc.name))
    return found


class Gateway:
    """A running gateway process; `address` is its one port."""

    def __init__(self, tmp_path, config, env=None, backend=None, dask=None, local_options="", prefix=""):
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        # With a prefix the API lives under it (`address + prefix`).
        self.prefix = prefix
        self.config_path = tmp_path / f"gateway-{self.port}.toml"
        self.log_path = tmp_path / f"gateway-{self.port}.log"
        self.state = tmp_path / "state"
        dask = dask or str(Path(sys.executable).parent / "dask")
        backend = backend or f'[backend]\ntype = "local"\ndask = "{dask}"\nstate_dir = "{self.state}"\n{local_options}\n'
        top = f'listen = "127.0.0.1:{self.port}"\nprefix = "{prefix}"\n'
        self.config_path.write_text(f'{top}{config}\n{backend}')
        self.env = env or {}
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [gateway_bin(), "--config", str(self.config_path)],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "info", **self.env},
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.proc.poll() is None, f"gateway exited: {self.log_path.read_text()}"
            try:
                urllib.request.urlopen(self.address + self.prefix + "/api/health", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("gateway did not answer /api/health")

    def stop(self):
        """SIGTERM, then the clusters it leaves running for a next gateway
        (and their process groups) are killed: tests leave nothing behind."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        for pid in processes_under(self.state):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except OSError:
                pass

    def restart(self, kill=False):
        """Stops the gateway (SIGTERM, or SIGKILL with `kill`) and starts it
        again on the same port, config and state directory; its clusters'
        processes are left as they are."""
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        code = self.proc.wait(30)
        self.log.close()
        self.start()
        return code

    def request(self, method, path, user=None, body=None, raw=None, headers=None):
        """(status, parsed JSON or None, headers) of one HTTP request."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.address + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if user:
            req.add_header("Authorization", "Basic " + b64encode(f"{user}:".encode()).decode())
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read()
                return resp.status, (json.loads(text) if text else None), resp.headers
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, (json.loads(text) if text else None), e.headers


def metric_values(gw):
    """`/metrics` as {"name{labels}": value}."""
    text = urllib.request.urlopen(gw.address + "/metrics", timeout=10).read().decode()
    return {f"{name}{{{labels}}}": float(value)
            for name, labels, value in re.findall(r"^(\w+)\{(.*)\} (\S+)$", text, re.M)}


def cluster_starts(gw, source):
    """How many clusters started from the warm pool (`pool`) or cold (`cold`)."""
    return metric_values(gw)[f'dask_gateway_cluster_starts_total{{source="{source}"}}']


# An `environment` option field: options that no pooled profile can serve.
ENVIRONMENT_OPTION = """
[[options.fields]]
field = "environment"
type = "mapping"
default = {}
target = "environment"
"""


def live_view(gw, user=None, token=None):
    """The web page's first snapshot (`GET /api/v1/events`) for `user` (simple
    auth) or the owner of a JupyterHub `token`: each cluster they may see,
    by name, as the page shows it."""
    import requests  # the test venv's; the other helpers need only the stdlib
    login = {"headers": {"Authorization": f"jupyterhub {token}"}} if token else {"auth": (user, "")}
    answer = requests.get(gw.address + gw.prefix + "/api/v1/options", timeout=10, **login)
    session = answer.cookies["dask-gateway"]
    with requests.get(gw.address + gw.prefix + "/api/v1/events", cookies={"dask-gateway": session},
                      stream=True, timeout=(5, 30)) as stream:
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines) == "event: clusters"
        data = next(lines)
    snapshot = json.loads(data.removeprefix("data:").strip())
    return {row["name"]: row for row in snapshot["clusters"]}
