"""Secure defaults and the smaller hardening checks, against the real
binary: open simple auth off loopback refuses to start, the session cookie's
flags, SIGTERM leaves clusters to the next gateway and stopping them removes
their keys, a private state dir,
the API token for the scheduler only, and non-object bodies (the Hub's
400/429 answers are in test_jupyterhub_auth)."""

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests
from testlib import poll

from gatewaylib import Gateway, gateway_bin


def running(gw, user="alice"):
    status, body, _ = gw.request("POST", "/api/v1/clusters/", user, {})
    assert status == 201, body
    name = body["name"]
    poll(lambda: gw.request("GET", f"/api/v1/clusters/{name}?wait", user)[1]["status"] == "RUNNING", 60, "the cluster to run")
    return name


def processes_in(directory):
    """{pid: (argv, environment)} of the processes whose working directory is `directory`."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") != str(directory):
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = dict(e.split(b"=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
            found[int(proc.name)] = ([a.decode() for a in argv if a], {k.decode(): v.decode() for k, v in env.items()})
        except OSError:
            continue
    return found


def test_open_simple_auth_off_loopback_refuses_to_start(tmp_path):
    config = tmp_path / "open.toml"
    config.write_text('listen = "0.0.0.0:8000"\n')
    proc = subprocess.run([gateway_bin(), "--config", str(config), "check-config"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "auth.allow_insecure = true" in proc.stderr, proc.stderr
    # The --listen flag is checked too.
    proc = subprocess.run([gateway_bin(), "--listen", "0.0.0.0:0", "check-config"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "lets anyone act as any user" in proc.stderr, proc.stderr
    config.write_text('listen = "0.0.0.0:8000"\n[auth]\nallow_insecure = true\n')
    assert subprocess.run([gateway_bin(), "--config", str(config), "check-config"], capture_output=True, timeout=30).returncode == 0


def test_the_session_cookie_is_httponly_samesite_scoped_and_secure_behind_https(tmp_path):
    gw = Gateway(tmp_path, "", prefix="/services/dask-gateway")
    base = gw.address + gw.prefix
    try:
        cookie = requests.get(base + "/api/v1/options", auth=("alice", ""), timeout=10).headers["Set-Cookie"]
        assert "; Path=/services/dask-gateway;" in cookie and "; HttpOnly" in cookie and "; SameSite=Lax" in cookie, cookie
        assert "Secure" not in cookie, cookie
        behind_https = requests.get(base + "/api/v1/options", auth=("bob", ""), headers={"X-Forwarded-Proto": "https"}, timeout=10)
        assert behind_https.headers["Set-Cookie"].endswith("; Secure"), behind_https.headers["Set-Cookie"]
    finally:
        gw.stop()


def ok(url):
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.timeout(120)
def test_sigterm_leaves_the_cluster_to_the_next_gateway_and_its_stop_removes_the_keys(start_gateway):
    # Workers started as processes of their own, so their environment is in
    # /proc (forked workers are checked from inside in test_pool).
    gw = start_gateway("[cluster]\nheartbeat_period = 1\n", local_options="fork_workers = false\n")
    name = running(gw)
    assert gw.request("POST", f"/api/v1/clusters/{name}/scale", "alice", {"count": 1})[0] == 200
    cluster_dir = gw.state / "clusters" / name
    for directory in (gw.state, gw.state / "clusters", cluster_dir, gw.state / "store"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    # The record that lets a restarted gateway adopt the cluster holds its token and key.
    assert (gw.state / "store" / "clusters" / f"{name}.json").stat().st_mode & 0o777 == 0o600

    # Only the scheduler holds the gateway API token; the worker has the TLS pair.
    def roles():
        found = {role: env for argv, env in processes_in(cluster_dir).values()
                 for role in ("scheduler", "worker") if role in argv}
        return found if {"scheduler", "worker"} <= set(found) else None
    found = poll(roles, 60, "a scheduler and a worker process")
    assert "DASK_GATEWAY_API_TOKEN" in found["scheduler"]
    assert "DASK_GATEWAY_API_TOKEN" not in found["worker"], sorted(found["worker"])
    assert found["worker"]["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"].endswith("dask.pem")
    assert (cluster_dir / "dask.pem").exists()
    pids = set(processes_in(cluster_dir))

    # SIGTERM: a clean exit that leaves the running cluster for the next gateway.
    assert gw.restart() == 0
    log = gw.log_path.read_text()
    assert "SIGTERM" in log and "stopped" in log
    # Every process survives (a nanny may have started its worker meanwhile).
    assert pids <= set(processes_in(cluster_dir))
    # Stopped through the restarted gateway: processes and keys go.
    assert gw.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    poll(lambda: processes_in(cluster_dir) == {}, 30, "the cluster's processes to exit")
    # (The restarted gateway's pooled scheduler has keys of its own.)
    poll(lambda: not list(cluster_dir.glob("*.pem")) and not list(cluster_dir.glob("*.crt")), 30, "the keys to go")
    assert not (gw.state / "store" / "clusters" / f"{name}.json").exists()


def test_a_body_that_is_not_an_object_is_refused_and_creates_nothing(gateway):
    for raw in (b'"x"', b"[1, 2]", b"3", b"null", b"true"):
        status, body, _ = gateway.request("POST", "/api/v1/clusters/", "alice", raw=raw)
        assert status == 422 and "Invalid JSON body" in body["error"], (raw, status, body)
    for raw in (b'"x"', b"[1, 2]"):
        assert gateway.request("POST", "/api/v1/clusters/nope/scale", "alice", raw=raw)[0] == 422
        assert gateway.request("POST", "/api/v1/clusters/nope/adapt", "alice", raw=raw)[0] == 422
    every = "/api/v1/clusters/?status=PENDING,RUNNING,STOPPING,STOPPED,FAILED"
    assert gateway.request("GET", every, "alice")[:2] == (200, {})
