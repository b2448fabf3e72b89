"""A cluster that cannot start says why, at once: the local backend's
scheduler process that exits gives its exit status and the last lines of its
log, and the real client's `new_cluster()` raises with them (a 409 on
`GET ?wait`), long before `start_timeout`. Without `?wait` the cluster stays
a plain FAILED report, with exactly the protocol's keys."""

import gc
import time

import pytest
from dask_gateway import BasicAuth, Gateway, GatewayClusterError

from testlib import client_raises

# Far beyond the few seconds a crash takes to be told: an error that came
# from the timeout would name it.
START_TIMEOUT = 120


def fake_dask(tmp_path, name, script):
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def failing_start(gw, match):
    """Runs the real client's new_cluster, which must raise; returns the
    seconds it took and the message the user sees."""
    client = Gateway(gw.address, auth=BasicAuth("alice", ""))
    started = time.monotonic()
    with pytest.raises(GatewayClusterError, match=match) as raised:
        client.new_cluster()
    seconds = time.monotonic() - started
    message = str(raised.value)
    # The failed cluster sits in a reference cycle with the exception: collect
    # it here, not on the client's loop thread (see testlib.client_raises).
    del raised
    gc.collect()
    client.close()
    print(f"\nnew_cluster raised after {seconds:.1f}s: {message}")
    return seconds, message


@pytest.mark.timeout(90)
def test_a_real_scheduler_crashing_at_start_is_told_with_its_traceback(start_gateway):
    # A typo in the Dask config of the cluster's environment: the real
    # `dask scheduler` exits at start with a ValueError.
    config = (f"[cluster]\nstart_timeout = {START_TIMEOUT}\n"
              "environment = { DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING_INTERVAL = \"not-a-time\" }\n")
    gw = start_gateway(config)
    seconds, message = failing_start(gw, "failed to start: the scheduler exited with status 1")
    assert "ValueError: could not convert string to float" in message
    assert "did not start within" not in message
    assert seconds < START_TIMEOUT / 2

    # Listed and reported as FAILED (no extra keys) when not waited for.
    failed = gw.request("GET", "/api/v1/clusters/?status=FAILED", "alice")[1]
    assert len(failed) == 1
    name, report = next(iter(failed.items()))
    assert report["status"] == "FAILED" and report["stop_time"] is not None
    status, plain, _ = gw.request("GET", f"/api/v1/clusters/{name}", "alice")
    assert status == 200 and set(plain) == set(report)
    status, waited, _ = gw.request("GET", f"/api/v1/clusters/{name}?wait", "alice")
    assert status == 409 and "ValueError: could not convert string to float" in waited["error"]
    # Another user learns nothing of it.
    assert gw.request("GET", f"/api/v1/clusters/{name}?wait", "mallory")[0] == 403


@pytest.mark.timeout(60)
def test_the_reason_is_bounded_to_the_end_of_the_log(start_gateway, tmp_path):
    # 500 lines, the last one the cause; a signal, not an exit code.
    noisy = fake_dask(tmp_path, "dask-noisy", "i=0; while [ $i -lt 500 ]; do echo \"noise $i\"; i=$((i+1)); done\n"
                                              "echo 'the real cause' >&2\nkill -9 $$")
    gw = start_gateway(f"[cluster]\nstart_timeout = {START_TIMEOUT}\n", dask=noisy)
    seconds, message = failing_start(gw, "the scheduler was killed by SIGKILL")
    assert message.rstrip().endswith("the real cause")
    assert "noise 479" not in message and "noise 499" in message, "the last 20 lines only"
    assert len(message) < 4096 + 300
    assert seconds < START_TIMEOUT / 2


@pytest.mark.timeout(60)
def test_a_scheduler_that_never_starts_still_fails_at_its_timeout(start_gateway, tmp_path):
    hanging = fake_dask(tmp_path, "dask-that-hangs", "exec sleep 60")
    gw = start_gateway("[cluster]\nstart_timeout = 2\n", dask=hanging)
    client = Gateway(gw.address, auth=BasicAuth("alice", ""))
    client_raises(GatewayClusterError, "failed to start: the scheduler did not start within 2s", client.new_cluster)
    client.close()
