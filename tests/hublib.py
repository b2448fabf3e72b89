"""A real JupyterHub (PyPI `jupyterhub`, pinned in tests/python/hub-env) on
loopback for the tests: dummy authenticator, in-memory database, a proxy
(configurable-http-proxy from npm), services with fixed tokens and roles.

    hub = Hub(tmp_path)                     # picks ports on 127.0.0.1 (ip=... for another address); nothing runs yet
    hub.api_url                             # http://127.0.0.1:<port>/hub/api (for the gateway's config)
    hub.public_url                          # the proxy's URL, where browsers log in
    hub.start(services=[Hub.service("dask-gateway", token, url=..., oauth_redirect_uri=...)],
              user_scopes=["self", "access:services!service=dask-gateway"])
    hub.add_user("alice", groups=["staff"])
    token, token_id = hub.new_token("alice")             # the user's own scopes
    narrow, _ = hub.new_token("bob", scopes=["read:users:name!user=bob"])
    hub.revoke("alice", token_id)
    hub.spawn("alice")                      # the Hub's spawner starts alice's server (see extra_config)
    hub.stop_server("alice")
    hub.stop()

Where the Hub and the proxy come from: $DASK_RS_HUB_VENV and $DASK_RS_HUB_PROXY,
else tests/python/hub-env (which installs them once). An "admin-bot" service
(admin:users, admin:groups, admin:servers, tokens) is always there for the calls above.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def hub_install():
    """(the Hub venv, the configurable-http-proxy binary)."""
    venv, proxy = os.environ.get("DASK_RS_HUB_VENV"), os.environ.get("DASK_RS_HUB_PROXY")
    if not (venv and proxy):
        out = subprocess.run([str(ROOT / "tests/python/hub-env")], capture_output=True, text=True, check=True)
        venv, proxy = out.stdout.split()
    return Path(venv), proxy


def stand_in_spawner(report_dir, address, proxy_address, public_address, **env):
    """Hub config: the Hub spawns tests/gateway/notebook_server.py (a
    stand-in for a single-user server) as each user's server, with
    SimpleLocalProcessSpawner (this machine's user) and the recipe's
    environment for the dask-gateway client (`env` adds to it)."""
    environment = {
        "DASK_GATEWAY__ADDRESS": address,
        "DASK_GATEWAY__PROXY_ADDRESS": proxy_address,
        "DASK_GATEWAY__PUBLIC_ADDRESS": public_address,
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        "PYTHONPATH": str(ROOT / "tests"),
        "NOTEBOOK_REPORT_DIR": str(report_dir),
        **env,
    }
    return f"""
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{sys.executable!r}, {str(ROOT / "tests" / "gateway" / "notebook_server.py")!r}]
c.Spawner.environment = {json.dumps(environment)}
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
"""


class Hub:
    def __init__(self, workdir, ip="127.0.0.1"):
        """`ip`: where the Hub's API and its proxy listen (e.g. an address pods reach)."""
        self.ip = ip
        self.workdir = Path(workdir) / f"hub-{secrets.token_hex(4)}"
        self.workdir.mkdir(parents=True)
        self.port, self.hub_port, self.proxy_api_port = _free_port(ip), _free_port(ip), _free_port()
        self.public_url = f"http://{ip}:{self.port}"
        self.api_url = f"http://{ip}:{self.hub_port}/hub/api"
        self.admin_token = secrets.token_hex(32)
        self.proc = None
        self.log_path = self.workdir / "hub.log"

    @staticmethod
    def service(name, api_token, **fields):
        """A `c.JupyterHub.services` entry (url, oauth_redirect_uri, oauth_no_confirm …)."""
        return {"name": name, "api_token": api_token, **fields}

    def start(self, services=(), user_scopes=("self",), roles=(), extra_config="", timeout=60):
        venv, proxy = hub_install()
        services = [*services, self.service("admin-bot", self.admin_token)]
        roles = [
            {"name": "admin-bot", "scopes": ["admin:users", "admin:groups", "admin:servers", "tokens"],
             "services": ["admin-bot"]},
            {"name": "user", "scopes": list(user_scopes)},
            *roles,
        ]
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(f"""
c.JupyterHub.ip = {self.ip!r}
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = {self.ip!r}
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.db_url = "sqlite:///:memory:"
c.JupyterHub.cookie_secret_file = {str(self.workdir / "cookie_secret")!r}
c.JupyterHub.services = {json.dumps(services)}
c.JupyterHub.load_roles = {json.dumps(roles)}
{extra_config}
""".replace(": true", ": True").replace(": false", ": False"))
        self.log = open(self.log_path, "ab")
        # A session of its own: stop() ends the Hub and the proxy it started.
        self.proc = subprocess.Popen(
            [str(venv / "bin/jupyterhub"), "-f", str(config)],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"},
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"jupyterhub exited: {self.log_path.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{self.public_url}/hub/api/", timeout=2)
                return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"jupyterhub did not answer: {self.log_path.read_text()[-3000:]}")

    def api(self, method, path, body=None, token=None):
        """(status, parsed JSON or None) of a Hub API call, as admin-bot by default."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method)
        req.add_header("Authorization", f"token {token or self.admin_token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read()
                return resp.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, (json.loads(text) if text else None)

    def _ok(self, method, path, body=None):
        status, answer = self.api(method, path, body)
        assert status < 300, f"{method} {path}: {status} {answer}"
        return answer

    def add_user(self, name, groups=()):
        self._ok("POST", f"/users/{name}")
        for group in groups:
            if self.api("GET", f"/groups/{group}")[0] == 404:
                self._ok("POST", f"/groups/{group}")
            self._ok("POST", f"/groups/{group}/users", {"users": [name]})

    def new_token(self, user, scopes=None):
        """(token, id): with `scopes` None, the user's own scopes."""
        answer = self._ok("POST", f"/users/{user}/tokens", {} if scopes is None else {"scopes": scopes})
        return answer["token"], answer["id"]

    def revoke(self, user, token_id):
        self._ok("DELETE", f"/users/{user}/tokens/{token_id}")

    def spawn(self, user, timeout=90):
        """Starts `user`'s default server with the Hub's spawner; returns once the Hub calls it ready."""
        status, answer = self.api("POST", f"/users/{user}/server")
        assert status in (201, 202), f"spawn {user}: {status} {answer}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            server = (self.api("GET", f"/users/{user}")[1].get("servers") or {}).get("")
            if server and server.get("ready"):
                return server
            time.sleep(0.5)
        raise AssertionError(f"{user}'s server did not start: {self.log_path.read_text()[-3000:]}")

    def stop_server(self, user):
        status, answer = self.api("DELETE", f"/users/{user}/server")
        assert status in (202, 204), f"stop {user}'s server: {status} {answer}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            self.log.close()
