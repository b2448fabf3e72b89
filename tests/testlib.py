"""Helpers shared by the Python test suites (on the path via pytest.ini)."""

import time


def poll(predicate, timeout, what, interval=0.3):
    """The first truthy value of `predicate()`, retried until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
