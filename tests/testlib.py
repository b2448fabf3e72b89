"""Helpers shared by the Python test suites (on the path via pytest.ini)."""

import gc
import time

import pytest


def poll(predicate, timeout, what, interval=0.3):
    """The first truthy value of `predicate()`, retried until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def client_raises(expected, match, call, *args, **kwargs):
    """Asserts that a call of the real dask-gateway client raises `expected`,
    then collects the GatewayCluster the call left behind, in this thread.

    A cluster that fails to start stays in a reference cycle (its start task
    holds the exception, whose traceback holds the cluster). Its `__del__`,
    and its Gateway's, wait on the IO loop that the client and all its
    clusters share (`Gateway.sync`). Left to the cyclic GC, they may run on
    that loop's own thread, which then waits for itself forever: the next
    client call hangs (seen on loaded machines)."""
    with pytest.raises(expected, match=match):
        call(*args, **kwargs)
    gc.collect()
