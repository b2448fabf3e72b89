"""The local backend's warm pool of schedulers and its worker fork server,
with real Dask processes and the real dask-gateway client."""

import contextlib
import os
import signal

import psutil
import pytest
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from gatewaylib import ENVIRONMENT_OPTION, cluster_starts, metric_values
from testlib import poll


def pool_ready(gw):
    return metric_values(gw)['dask_gateway_pool_schedulers{status="running"}'] >= 1


def wait_for_pool(gw):
    poll(lambda: pool_ready(gw), 120, "a ready scheduler in the pool")


def forkserver_of(gw):
    """The gateway's worker fork server process (it has imported distributed)."""
    def find():
        return next((p for p in psutil.Process(gw.proc.pid).children()
                     if any("dask_gateway_forkserver.py" in a for a in p.cmdline())), None)
    return poll(find, 120, "the worker fork server")


def scheduler_env(dask_client):
    return dask_client.run_on_scheduler(lambda: dict(__import__("os").environ))


def processes_of(dask_client):
    """Pids of the scheduler and every worker (each worker's nanny, and the process it runs in)."""
    scheduler = dask_client.run_on_scheduler(os.getpid)
    workers = dask_client.run(os.getpid)
    nannies = dask_client.run(os.getppid)
    return {scheduler, *workers.values(), *nannies.values()}


def warm_gateway(start_gateway, config=""):
    """A gateway whose pool has a ready scheduler and whose fork server runs;
    its fork server; alice's client."""
    gw = start_gateway(config)
    wait_for_pool(gw)
    return gw, forkserver_of(gw), Gateway(gw.address, auth=BasicAuth("alice", ""))


@contextlib.contextmanager
def new_cluster(client, **options):
    """A cluster that is shut down, and its client closed, whatever happens."""
    cluster = client.new_cluster(**options)
    try:
        yield cluster
    finally:
        cluster.shutdown()
        client.close()


def gone(pids):
    return not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.timeout(300)
def test_pooled_clusters_run_at_once_with_their_own_credentials_and_the_pool_refills(start_gateway):
    gw, _, client = warm_gateway(start_gateway)
    first = client.new_cluster()
    try:
        assert cluster_starts(gw, "pool") == 1 and cluster_starts(gw, "cold") == 0
        assert gw.request("GET", f"/api/v1/clusters/{first.name}", "alice")[1]["status"] == "RUNNING"
        with first.get_client(set_as_default=False) as dask_client:
            first_env = scheduler_env(dask_client)
            # The claimed scheduler runs under the cluster's own name.
            assert first_env["DASK_GATEWAY_CLUSTER_NAME"] == first.name
        # The pool refills in the background, and its scheduler stays unseen.
        wait_for_pool(gw)
        pooled = {d.name for d in (gw.state / "clusters").iterdir()} - {first.name}
        assert pooled, "the refilled scheduler's directory"
        assert set(gw.request("GET", "/api/v1/clusters/", "alice")[1]) == {first.name}
        for name in pooled:
            assert gw.request("GET", f"/api/v1/clusters/{name}", "alice")[0] == 404
        second = client.new_cluster()
        try:
            assert cluster_starts(gw, "pool") == 2
            assert second.name in pooled
            with second.get_client(set_as_default=False) as dask_client:
                second_env = scheduler_env(dask_client)
            assert second_env["DASK_GATEWAY_API_TOKEN"] != first_env["DASK_GATEWAY_API_TOKEN"]
            first_report = gw.request("GET", f"/api/v1/clusters/{first.name}", "alice")[1]
            second_report = gw.request("GET", f"/api/v1/clusters/{second.name}", "alice")[1]
            assert first_report["tls_key"] != second_report["tls_key"]
            assert first_report["tls_cert"] != second_report["tls_cert"]
            # Each scheduler holds its own cluster's certificate, not another's.
            for env, report in ((first_env, first_report), (second_env, second_report)):
                cert = env["DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT"]
                assert report["tls_cert"] == open(cert).read() if os.path.exists(cert) else False
        finally:
            second.shutdown()
    finally:
        first.shutdown()
        client.close()


@pytest.mark.timeout(300)
def test_scale_two_forks_workers_that_compute_and_stop_kills_every_process(start_gateway):
    gw, forkserver, client = warm_gateway(start_gateway)
    with new_cluster(client) as cluster, cluster.get_client(set_as_default=False) as dask_client:
        cluster.scale(2)
        dask_client.wait_for_workers(2, timeout=120)
        assert dask_client.submit(sum, range(10)).result(timeout=60) == 45
        assert sum(dask_client.gather(dask_client.map(lambda x: x * x, range(20)))) == 2470
        pids = processes_of(dask_client)
        # Forked by the fork server (their nannies are its children), not started cold.
        nannies = set(dask_client.run(os.getppid).values())
        assert {psutil.Process(n).ppid() for n in nannies} == {forkserver.pid}
        assert len(nannies) == 2
        # User code in a forked worker sees the TLS pair, never the gateway API token
        # (its /proc environ is the fork server's, so ask the worker itself).
        seen = dask_client.run(lambda: sorted(k for k in __import__("os").environ if k.startswith("DASK_")))
        for names in seen.values():
            assert "DASK_GATEWAY_API_TOKEN" not in names and "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY" in names, names
        assert "DASK_GATEWAY_API_TOKEN" in scheduler_env(dask_client)
    poll(lambda: gone(pids), 30, f"the cluster's processes {pids} to exit")
    assert forkserver.is_running()


@pytest.mark.timeout(300)
def test_an_environment_option_starts_cold_and_is_counted(start_gateway):
    gw, forkserver, client = warm_gateway(start_gateway, ENVIRONMENT_OPTION)
    with new_cluster(client, environment={"POOL_TEST": "cold"}) as cluster:
        assert cluster_starts(gw, "cold") == 1 and cluster_starts(gw, "pool") == 0
        with cluster.get_client(set_as_default=False) as dask_client:
            assert scheduler_env(dask_client)["POOL_TEST"] == "cold"
            cluster.scale(1)
            dask_client.wait_for_workers(1, timeout=120)
            assert set(dask_client.run(lambda: __import__("os").environ["POOL_TEST"]).values()) == {"cold"}
            # Another environment may change what Python imports: no fork.
            nanny = next(iter(dask_client.run(os.getppid).values()))
            assert psutil.Process(nanny).ppid() != forkserver.pid
            assert dask_client.submit(lambda: 6 * 7).result(timeout=60) == 42
        # The pooled scheduler is still there for the next default cluster.
        assert pool_ready(gw)


@pytest.mark.timeout(300)
def test_stopping_the_gateway_stops_the_pool_and_leaves_users_clusters(start_gateway):
    gw, forkserver, client = warm_gateway(start_gateway)
    cluster = client.new_cluster()
    with cluster.get_client(set_as_default=False) as dask_client:
        cluster.scale(1)
        dask_client.wait_for_workers(1, timeout=120)
        users = processes_of(dask_client)
    wait_for_pool(gw)
    pool = {p.pid for p in psutil.Process(gw.proc.pid).children(recursive=True)} - users
    assert forkserver.pid in pool and len(pool) >= 2  # the fork server, the pooled scheduler
    assert len(users) >= 3  # the claimed scheduler, nanny, worker
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(30) == 0
    poll(lambda: gone(pool), 30, f"the pool's processes {pool} to exit")
    # The user's cluster is left for the next gateway to adopt.
    assert all(psutil.pid_exists(p) for p in users)
    client.close()


@pytest.mark.timeout(120)
def test_pool_size_zero_starts_everything_cold(start_gateway):
    gw = start_gateway(local_options="pool_size = 0\nfork_workers = false")
    with new_cluster(Gateway(gw.address, auth=BasicAuth("alice", ""))):
        assert cluster_starts(gw, "cold") == 1 and cluster_starts(gw, "pool") == 0
        assert metric_values(gw)['dask_gateway_pool_schedulers{status="running"}'] == 0
        assert not [p for p in psutil.Process(gw.proc.pid).children()
                    if any("dask_gateway_forkserver.py" in a for a in p.cmdline())]
