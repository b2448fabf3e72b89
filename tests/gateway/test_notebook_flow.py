"""The notebook flow with the real PyPI dask-gateway client against the
gateway's local backend: options, new_cluster, scale, compute through the
TLS/SNI splice, the dashboard (HTTP and websocket) through the proxy,
list, connect, shutdown."""

import asyncio
import re
import urllib.request

import aiohttp
import dask.array as da
import numpy as np
import pytest
from testlib import poll
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth

GIB = 1 << 30


@pytest.mark.timeout(180)
@pytest.mark.parametrize("profile,threads,memory", [("small", 1, 1 * GIB), ("medium", 2, 2 * GIB)])
def test_notebook_flow(gateway, profile, threads, memory):
    client_gateway = Gateway(gateway.address, auth=BasicAuth("alice", ""))
    opts = client_gateway.cluster_options()
    assert opts.profile == "small"
    assert list(opts._fields["profile"].options) == ["small", "medium", "larger"]
    opts.profile = profile

    cluster = client_gateway.new_cluster(opts)
    try:
        cluster.scale(2)
        client = cluster.get_client()
        client.wait_for_workers(2, timeout=60)
        workers = client.scheduler_info()["workers"].values()
        assert [(w["nthreads"], w["memory_limit"]) for w in workers] == [(threads, memory)] * 2

        x = da.arange(1_000_000, chunks=100_000)
        assert x.mean().compute() == pytest.approx(499_999.5)
        # The local backend hands the client's TLS connection to the
        # scheduler process rather than relaying it.
        routes = scheduler_connections(gateway)
        assert set(routes) == {"handoff"} and routes["handoff"] >= 1, routes

        # The link carries the cluster's dashboard capability (see test_dashboard_security).
        assert re.fullmatch(rf"{gateway.address}/clusters/{cluster.name}/~[0-9a-f]{{64}}/status", cluster.dashboard_link)
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as resp:
            assert resp.status == 200 and b"bokeh" in resp.read().lower()
        assert asyncio.run(websocket_opens(cluster.dashboard_link.replace("/status", "/eventstream")))

        assert [c.name for c in client_gateway.list_clusters()] == [cluster.name]
        again = client_gateway.connect(cluster.name)
        assert again.status == "running"
        client.close()
    finally:
        cluster.shutdown()
    assert client_gateway.list_clusters() == []
    stopped = poll(lambda: client_gateway.list_clusters(status="STOPPED"), 30, "the cluster to stop")
    assert [c.name for c in stopped] == [cluster.name]
    client_gateway.close()


@pytest.mark.timeout(120)
def test_relayed_scheduler_connections_carry_every_byte(start_gateway):
    """With handoff off the gateway splices scheduler TLS itself, the path
    the Kubernetes backend always takes."""
    gateway = start_gateway(local_options="handoff = false")
    client_gateway = Gateway(gateway.address, auth=BasicAuth("alice", ""))
    cluster = client_gateway.new_cluster()
    try:
        cluster.scale(1)
        client = cluster.get_client()
        client.wait_for_workers(1, timeout=60)
        data = np.arange(4 << 20, dtype="int64")  # 32 MiB each way
        assert (client.scatter(data, direct=False).result() == data).all()
        assert da.ones((1000, 1000), chunks=250).sum().compute() == 1_000_000
        routes = scheduler_connections(gateway)
        assert set(routes) == {"relay"} and routes["relay"] >= 1, routes
        client.close()
    finally:
        cluster.shutdown()
    client_gateway.close()


def scheduler_connections(gateway):
    """The gateway's scheduler-connection counters, by route."""
    text = urllib.request.urlopen(gateway.address + "/metrics").read().decode()
    found = re.findall(r'^dask_gateway_scheduler_connections_total\{route="(\w+)"\} (\d+)', text, re.M)
    return {route: int(n) for route, n in found}


async def websocket_opens(url):
    """The dashboard's event stream websocket, through the proxy."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
            return not ws.closed


@pytest.mark.timeout(120)
def test_adaptive_cluster_keeps_its_minimum_and_computes(gateway):
    client_gateway = Gateway(gateway.address, auth=BasicAuth("alice", ""))
    cluster = client_gateway.new_cluster()
    try:
        cluster.adapt(minimum=1, maximum=2)
        client = cluster.get_client()
        client.wait_for_workers(1, timeout=60)
        assert da.ones((2000, 2000), chunks=250).sum().compute() == 4_000_000
        # Adaptive scaling stays within its bounds.
        assert 1 <= len(client.scheduler_info()["workers"]) <= 2
        client.close()
    finally:
        cluster.shutdown()
    client_gateway.close()
