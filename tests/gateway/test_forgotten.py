"""Forgotten clusters: with `cluster.idle_client_timeout`, the
gateway stops a cluster that has had no client connected for that long (its
notebook went away), while a cluster whose client stays connected, idle or
not, keeps running. The real client and real schedulers; the scheduler
reports its clients in each heartbeat (the presence preload)."""

import time
import urllib.request

import pytest
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from gatewaylib import live_view
from testlib import poll

TIMEOUT = 4
CONFIG = f"[cluster]\nidle_client_timeout = {TIMEOUT}\nheartbeat_period = 1\n"


def metric(gw, name):
    text = urllib.request.urlopen(gw.address + "/metrics", timeout=10).read().decode()
    return [line for line in text.splitlines() if line.startswith(name)]


@pytest.mark.timeout(180)
def test_a_cluster_whose_client_left_stops_and_one_with_a_client_stays(start_gateway):
    gw = start_gateway(CONFIG)
    gateway = Gateway(gw.address, auth=BasicAuth("alice", ""))
    left, kept = gateway.new_cluster(), gateway.new_cluster()
    kept_client = kept.get_client()
    left.scale(1)
    left_client = left.get_client()
    assert left_client.submit(sum, [1, 2]).result() == 3
    left_client.close()
    left_at = time.monotonic()
    # The dashboard is no client: looking at it does not keep the cluster.
    with urllib.request.urlopen(left.dashboard_link, timeout=30) as resp:
        assert resp.status == 200

    def stopped():
        return [c.name for c in gateway.list_clusters(status="STOPPED")]

    poll(lambda: left.name in stopped(), 60, "the forgotten cluster to stop")
    lived = time.monotonic() - left_at
    assert lived >= TIMEOUT, f"stopped {lived:.1f} s after its client left, before the timeout"
    print(f"forgotten cluster stopped {lived:.1f} s after its client left (timeout {TIMEOUT} s)")
    # The page says why the gateway stopped it.
    assert "idle_client_timeout" in live_view(gw, "alice")[left.name]["reason"]

    # The other one has had its (idle) client all along, well past the timeout.
    time.sleep(TIMEOUT)
    assert [c.name for c in gateway.list_clusters()] == [kept.name]
    kept.scale(1)
    assert kept_client.submit(sum, [3, 4]).result() == 7
    assert metric(gw, "dask_gateway_forgotten_cluster_stops_total") == [
        "dask_gateway_forgotten_cluster_stops_total 1"]
    kept_client.close()
    kept.shutdown()
    left.close()
    gateway.close()


def test_the_timeout_can_be_an_option_and_zero_keeps_clusters(start_gateway):
    gw = start_gateway(
        '[[options.fields]]\nfield = "idle_client_timeout"\ntype = "float"\ndefault = 0\n'
        'min = 0\nmax = 86400\ntarget = "idle_client_timeout"\n'
        "[cluster]\nheartbeat_period = 1\n"
    )
    gateway = Gateway(gw.address, auth=BasicAuth("alice", ""))
    options = gateway.cluster_options()
    options.idle_client_timeout = 2
    short = gateway.new_cluster(options)
    forever = gateway.new_cluster()  # the default, 0: never stopped for lack of a client
    poll(lambda: short.name in [c.name for c in gateway.list_clusters(status="STOPPED")], 60,
         "the cluster with a 2 s timeout to stop")
    assert [c.name for c in gateway.list_clusters()] == [forever.name]
    forever.shutdown()
    short.close()
    gateway.close()


@pytest.mark.timeout(120)
def test_a_cluster_past_its_profiles_lifetime_stops_even_with_a_client(start_gateway):
    """`max_lifetime`, here per profile: the cluster stops at its age, its
    connected client notwithstanding; another profile's cluster keeps running."""
    lifetime = 4
    gw = start_gateway(
        "[cluster]\nheartbeat_period = 1\n"
        f'[[options.profiles]]\nname = "short"\nworker_cores = 0.5\nworker_memory = "1 GiB"\nmax_lifetime = {lifetime}\n'
        '[[options.profiles]]\nname = "long"\nworker_cores = 0.5\nworker_memory = "1 GiB"\n'
    )
    gateway = Gateway(gw.address, auth=BasicAuth("alice", ""))
    options = gateway.cluster_options()
    options.profile = "short"
    started = time.monotonic()
    short = gateway.new_cluster(options)
    short_client = short.get_client()
    options.profile = "long"
    long = gateway.new_cluster(options)
    poll(lambda: short.name in [c.name for c in gateway.list_clusters(status="STOPPED")], 60,
         "the cluster past its lifetime to stop")
    lived = time.monotonic() - started
    assert lived >= lifetime, f"stopped after {lived:.1f} s, before its lifetime"
    print(f"cluster with a {lifetime} s lifetime stopped {lived:.1f} s after its create")
    assert [c.name for c in gateway.list_clusters()] == [long.name]
    rows = live_view(gw, "alice")
    assert "max_lifetime = 4" in rows[short.name]["reason"] and rows[long.name]["reason"] is None, rows
    assert metric(gw, "dask_gateway_lifetime_cluster_stops_total") == ["dask_gateway_lifetime_cluster_stops_total 1"]
    assert metric(gw, "dask_gateway_forgotten_cluster_stops_total") == ["dask_gateway_forgotten_cluster_stops_total 0"]
    short_client.close()
    long.shutdown()
    short.close()
    gateway.close()
