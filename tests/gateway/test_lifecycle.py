"""Cluster lifecycle on the local backend beyond the happy path: the
scheduler's own idle timeout stops it, a scheduler that never starts or
dies fails the cluster with the reason in the gateway's log, and the
client is told."""

import pytest
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from dask_gateway.client import GatewayClusterError
from testlib import client_raises, poll


def fake_dask(tmp_path, name, script):
    """A `dask` executable that runs `script` (sh) instead of Dask."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def cluster_status(gw, name):
    return gw.request("GET", f"/api/v1/clusters/{name}", "alice")[1]["status"]


@pytest.mark.timeout(60)
def test_idle_cluster_stops_itself(start_gateway):
    gw = start_gateway("[cluster]\nidle_timeout = 2\n")
    name = gw.request("POST", "/api/v1/clusters/", "alice", {})[1]["name"]
    assert gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice")[1]["status"] == "RUNNING"
    poll(lambda: cluster_status(gw, name) == "STOPPED", 30, "the idle cluster to stop")
    assert "cluster stopped by its scheduler (idle timeout)" in gw.log_path.read_text()


@pytest.mark.timeout(60)
def test_scheduler_that_never_starts_fails_the_cluster(start_gateway, tmp_path):
    hanging = fake_dask(tmp_path, "dask-that-hangs", "exec sleep 60")
    gw = start_gateway("[cluster]\nstart_timeout = 2\n", dask=hanging)
    client = Gateway(gw.address, auth=BasicAuth("alice", ""))
    client_raises(GatewayClusterError, "failed to start", client.new_cluster)
    client.close()
    failed = gw.request("GET", "/api/v1/clusters/?status=FAILED", "alice")[1]
    assert len(failed) == 1 and next(iter(failed.values()))["stop_time"] is not None
    assert "the scheduler did not start within 2s" in gw.log_path.read_text()


@pytest.mark.timeout(60)
def test_scheduler_that_dies_fails_the_cluster(start_gateway, tmp_path):
    crashing = fake_dask(tmp_path, "dask-that-crashes", "echo 'ImportError: no module named distributed' >&2\nexit 3")
    gw = start_gateway(dask=crashing)
    name = gw.request("POST", "/api/v1/clusters/", "alice", {})[1]["name"]
    poll(lambda: cluster_status(gw, name) == "FAILED", 30, "the cluster to fail")
    log = gw.log_path.read_text()
    assert "the scheduler exited with status 3" in log and "no module named distributed" in log
