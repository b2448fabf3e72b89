"""History and logs on the local backend, with the real dask-gateway client
and real Dask: stopped and failed clusters stay listed (with
`list_clusters(status=...)`) for `completed_cluster_max_age`, then go, logs
and all; `GET /api/v1/clusters/<name>/logs` gives the scheduler's and each
worker's last lines to the owner or an admin, bounded."""

import pytest
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from dask_gateway.client import ClusterStatus
from testlib import poll

MAX_AGE = 20
CONFIG = f'[cluster]\ncompleted_cluster_max_age = {MAX_AGE}\n[auth]\nadmins = ["root"]\n'


def fake_dask(tmp_path, name, script):
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def logs(gw, name, user, query=""):
    return gw.request("GET", f"/api/v1/clusters/{name}/logs{query}", user)


@pytest.mark.timeout(180)
def test_a_stopped_cluster_stays_listed_with_its_logs_then_goes(start_gateway):
    gw = start_gateway(CONFIG, local_options="pool_size = 0\n")
    client = Gateway(gw.address, auth=BasicAuth("alice", ""))
    try:
        cluster = client.new_cluster()
        name = cluster.name
        cluster.scale(1)
        with cluster.get_client() as dask_client:
            dask_client.wait_for_workers(1, timeout=60)
            assert dask_client.submit(sum, [1, 2]).result() == 3
            worker = next(iter(dask_client.scheduler_info()["workers"].values()))["name"]

        # A running cluster's logs: the scheduler's and the worker's, by its Dask name.
        status, body, headers = logs(gw, name, "alice")
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert (body["name"], body["status"], body["reason"]) == (name, "RUNNING", None)
        assert any("Scheduler at" in line for line in body["scheduler"]), body["scheduler"]
        assert worker in body["workers"], (worker, list(body["workers"]))
        assert any("Registered to" in line for line in body["workers"][worker]), body["workers"][worker]
        status, few, _ = logs(gw, name, "alice", "?lines=3")
        assert status == 200 and len(few["scheduler"]) == 3 and few["scheduler"] == body["scheduler"][-3:]
        assert all(len(lines) <= 3 for lines in few["workers"].values())
        # Others get 403, admins the logs, bad bounds a 422 naming the parameter.
        assert logs(gw, name, "bob")[0] == 403
        assert logs(gw, name, "root")[0] == 200
        status, body, _ = logs(gw, name, "alice", "?lines=many")
        assert status == 422 and "lines" in body["error"]

        cluster.shutdown()
        # Listed as STOPPED (the real client's status filter), not by default.
        stopped = poll(lambda: [c for c in client.list_clusters(status="stopped") if c.name == name],
                       30, "the stopped cluster in list_clusters(status='stopped')")
        assert stopped[0].status == ClusterStatus.STOPPED and stopped[0].stop_time is not None
        assert name not in [c.name for c in client.list_clusters()]
        # Its logs stay with it, its key does not.
        status, body, _ = logs(gw, name, "alice")
        assert status == 200 and body["status"] == "STOPPED" and body["reason"] is None
        assert any("Scheduler at" in line for line in body["scheduler"])
        directory = gw.state / "clusters" / name
        assert not (directory / "dask.pem").exists()

        # After completed_cluster_max_age it is gone: list, report, logs and files.
        poll(lambda: not client.list_clusters(status="stopped"), MAX_AGE + 30, "the stopped cluster to be dropped")
        assert gw.request("GET", f"/api/v1/clusters/{name}", "alice")[0] == 404
        assert logs(gw, name, "alice")[0] == 404
        poll(lambda: not directory.exists(), 10, "the cluster's directory to be removed")
    finally:
        client.close()


@pytest.mark.timeout(120)
def test_a_failed_cluster_keeps_its_reason_and_logs_for_its_history_period(start_gateway, tmp_path):
    crashing = fake_dask(tmp_path, "dask-that-crashes",
                         "echo 'starting the scheduler'\necho 'ImportError: no module named distributed' >&2\nexit 3")
    gw = start_gateway(CONFIG, dask=crashing, local_options="pool_size = 0\n")
    name = gw.request("POST", "/api/v1/clusters/", "alice", {})[1]["name"]
    poll(lambda: gw.request("GET", f"/api/v1/clusters/{name}", "alice")[1]["status"] == "FAILED", 30,
         "the cluster to fail")

    client = Gateway(gw.address, auth=BasicAuth("alice", ""))
    try:
        failed = client.list_clusters(status="failed")
        assert [c.name for c in failed] == [name] and failed[0].status == ClusterStatus.FAILED
        assert failed[0].stop_time is not None
        assert [c.name for c in client.list_clusters(status=["stopped", "failed"])] == [name]
    finally:
        client.close()

    status, body, _ = logs(gw, name, "alice")
    assert status == 200, body
    assert body["status"] == "FAILED" and body["reason"] == "the scheduler exited (exit status: 3)"
    assert body["scheduler"] == ["starting the scheduler", "ImportError: no module named distributed"]
    assert body["workers"] == {} and body["truncated"] is False
    assert logs(gw, name, "alice", "?lines=1")[1]["scheduler"] == ["ImportError: no module named distributed"]
    assert logs(gw, name, "bob")[0] == 403
    assert logs(gw, name, "root")[1]["reason"] == body["reason"]
    # Stopping a failed cluster changes nothing: it stays in the history.
    assert gw.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    assert gw.request("GET", f"/api/v1/clusters/{name}", "alice")[1]["status"] == "FAILED"

    poll(lambda: gw.request("GET", "/api/v1/clusters/?status=FAILED", "alice")[1] == {}, MAX_AGE + 30,
         "the failed cluster to be dropped")
    assert logs(gw, name, "alice")[0] == 404


@pytest.mark.timeout(60)
def test_a_huge_log_is_read_from_its_end(start_gateway, tmp_path):
    # A scheduler that writes 200 000 lines (~5 MiB), then fails: the answer
    # holds the last lines only, within the per-log byte cap.
    chatty = fake_dask(tmp_path, "dask-that-chats", "seq 1 200000 | sed 's/^/line /'\nexit 1")
    gw = start_gateway(CONFIG, dask=chatty, local_options="pool_size = 0\n")
    name = gw.request("POST", "/api/v1/clusters/", "alice", {})[1]["name"]
    poll(lambda: gw.request("GET", f"/api/v1/clusters/{name}", "alice")[1]["status"] == "FAILED", 30,
         "the cluster to fail")
    status, body, _ = logs(gw, name, "alice", "?lines=100000")
    assert status == 200
    assert len(body["scheduler"]) == 1000 and body["scheduler"][-1] == "line 200000"
    assert body["scheduler"][0] == "line 199001"
