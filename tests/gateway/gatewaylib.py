"""The real `dask-gateway` binary (built by cargo) on a loopback port, with a
config file written per test: by default its clusters run as local `dask`
processes from the test venv."""

import json
import os
import re
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


class Gateway:
    """A running gateway process; `address` is its one port."""

    def __init__(self, tmp_path, config, env=None, backend=None, dask=None, local_options=""):
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.config_path = tmp_path / f"gateway-{self.port}.toml"
        self.log_path = tmp_path / f"gateway-{self.port}.log"
        self.state = tmp_path / "state"
        dask = dask or str(Path(sys.executable).parent / "dask")
        backend = backend or f'[backend]\ntype = "local"\ndask = "{dask}"\nstate_dir = "{self.state}"\n{local_options}\n'
        self.config_path.write_text(f'listen = "127.0.0.1:{self.port}"\n{config}\n{backend}')
        # The API (health included) is under the config's `prefix`, if any.
        prefix = re.search(r'^prefix = "(.*)"$', config, re.M)
        self.prefix = prefix.group(1) if prefix else ""
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
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

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


