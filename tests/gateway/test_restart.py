"""The local backend survives its own restart (an upgrade or a crash must
not end users' clusters), with real
Dask processes and the real dask-gateway client: a gateway stopped with
SIGTERM, or killed with SIGKILL, in the middle of a client session is
started again on the same state directory, and the client reconnects to
the very same cluster (same scheduler process, same workers) and computes
on it; its shutdown then stops every process of the cluster. A gateway
killed and not restarted leaves nothing behind: its clusters end
themselves within the heartbeat window."""

import os
import re
import time
import urllib.request

import dask.array as da
import pytest
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from testlib import poll

from gatewaylib import processes_under

# Heartbeats every second: the lifeline (4 periods, at least 10 s) is short.
FAST_HEARTBEATS = "[cluster]\nheartbeat_period = 1\n"


def alive(pids):
    def running(pid):
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in "ZX"
        except OSError:
            return False
    return {p for p in pids if running(p)}


def handoffs(gw):
    text = urllib.request.urlopen(gw.address + "/metrics", timeout=10).read().decode()
    found = re.search(r'^dask_gateway_scheduler_connections_total\{route="handoff"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def start_session(gw):
    """alice's cluster with two workers that computed; (client, cluster,
    scheduler pid, worker pids)."""
    client = Gateway(gw.address, auth=BasicAuth("alice", ""))
    # Kept alive by the test, not by this object: the session's objects
    # are dropped (as a notebook kernel restart would) while it runs on.
    cluster = client.new_cluster(shutdown_on_close=False)
    cluster.scale(2)
    with cluster.get_client(set_as_default=False) as dask_client:
        dask_client.wait_for_workers(2, timeout=120)
        assert dask_client.compute(da.ones((200, 200), chunks=50).sum()).result() == 40000
        scheduler = dask_client.run_on_scheduler(os.getpid)
        workers = set(dask_client.run(os.getpid).values())
    return client, cluster, scheduler, workers


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_restarted_gateway_adopts_the_cluster_and_the_client_computes_on_it(start_gateway, how):
    gw = start_gateway(FAST_HEARTBEATS)
    t0 = time.monotonic()
    timeline = []

    def mark(what):
        timeline.append((round(time.monotonic() - t0, 2), what))

    first_client, first_cluster, scheduler, workers = start_session(gw)
    name = first_cluster.name
    mark("cluster running, 2 workers, computed")
    processes = processes_under(gw.state, name)
    assert scheduler in processes and workers <= processes, (scheduler, workers, processes)
    # The warm pool's next scheduler (not adopted: stopped at restart).
    pooled = processes_under(gw.state) - processes

    code = gw.restart(kill=(how == "sigkill"))
    assert code == (-9 if how == "sigkill" else 0)
    mark(f"gateway restarted after {how}")
    # Nothing of the cluster died with the gateway.
    assert alive(processes) == processes

    handed_off = handoffs(gw)
    client = Gateway(gw.address, auth=BasicAuth("alice", ""))
    assert name in [c.name for c in client.list_clusters()]
    mark("listed by the new gateway")
    cluster = client.connect(name)
    with cluster.get_client(set_as_default=False) as dask_client:
        # The same scheduler and workers, reached through the new gateway.
        assert dask_client.run_on_scheduler(os.getpid) == scheduler
        assert set(dask_client.run(os.getpid).values()) == workers
        assert dask_client.compute(da.ones((300, 300), chunks=50).sum()).result() == 90000
        mark("client computed on the same cluster")
        # Handed to the scheduler by the new gateway too (not relayed).
        assert handoffs(gw) > handed_off
        # Heartbeats reach the new gateway and its orders the scheduler.
        cluster.scale(1)
        poll(lambda: len(dask_client.scheduler_info()["workers"]) == 1, 60, "a scale down to 1 worker")
        mark("scaled down through the new gateway")
    assert cluster.dashboard_link.startswith(gw.address)
    poll(lambda: not alive(pooled), 30, "the old pool's scheduler to be stopped")

    cluster.shutdown()
    poll(lambda: not processes_under(gw.state, name), 60, f"every process of {name} to exit")
    mark("shut down, every process gone")
    assert name not in [c.name for c in client.list_clusters()]
    client.close()
    first_client.close()
    print(f"\nrestart timeline ({how}):", "; ".join(f"{t}s {w}" for t, w in timeline))


@pytest.mark.timeout(180)
def test_after_a_kill_the_clusters_end_themselves_within_the_heartbeat_window(start_gateway):
    gw = start_gateway(FAST_HEARTBEATS)
    client, cluster, scheduler, workers = start_session(gw)
    processes = processes_under(gw.state)  # the cluster's and the pool's
    assert scheduler in processes and workers <= processes
    gw.proc.kill()
    gw.proc.wait(30)
    killed = time.monotonic()
    # The lifeline is 10 s here: the cluster and the pooled scheduler stop
    # themselves, workers right after their scheduler.
    poll(lambda: not alive(processes), 60, f"the processes {alive(processes)} to exit")
    print(f"\nevery process gone {time.monotonic() - killed:.1f}s after the kill")
    assert not processes_under(gw.state)
    client.close()


@pytest.mark.timeout(120)
def test_sigterm_answers_the_request_in_flight_before_the_gateway_exits(start_gateway):
    import threading

    gw = start_gateway(local_options="pool_size = 0\nfork_workers = false\n")
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {})
    assert status == 201, body
    name = body["name"]
    answers = []
    # A long poll, in flight until the cluster changes (it starts cold:
    # PENDING for a second or more, so the poll is open when SIGTERM comes).
    waiting = threading.Thread(
        target=lambda: answers.append(gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice")))
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive(), answers
    gw.proc.terminate()
    assert gw.proc.wait(30) == 0
    waiting.join(30)
    # Answered in full, not cut off by the exit.
    assert answers and answers[0][0] == 200 and answers[0][1]["name"] == name, answers
