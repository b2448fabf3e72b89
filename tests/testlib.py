"""Helpers shared by the Python test suites (on the path via pytest.ini)."""

import contextlib
import gc
import http.server
import json
import threading
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


def dask_scheduler(cluster, image, args=("dask", "scheduler"), initial_delay=0):
    """A DaskCluster's `spec.scheduler` for real pods, as flow-style YAML: one
    scheduler container, ready once its dashboard answers /health, behind a
    ClusterIP Service on the usual ports."""
    ports = [("tcp-comm", 8786), ("http-dashboard", 8787)]
    probe = {"port": "http-dashboard", "path": "/health"}
    return json.dumps({
        "spec": {"containers": [{
            "name": "scheduler", "image": image, "imagePullPolicy": "Never", "args": list(args),
            "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
            "readinessProbe": {"httpGet": probe, "initialDelaySeconds": initial_delay, "periodSeconds": 2},
        }]},
        "service": {
            "type": "ClusterIP",
            "selector": {"dask.org/cluster-name": cluster, "dask.org/component": "scheduler"},
            "ports": [{"name": n, "protocol": "TCP", "port": p, "targetPort": n} for n, p in ports],
        },
    })


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


@contextlib.contextmanager
def fake_hub(route):
    """A stand-in for the JupyterHub REST API on loopback: `route(path,
    token)` answers each GET with (status, JSON body), `token` being what
    follows `Authorization: token `. Yields the API URL (`.../hub/api`)."""
    class HubAPI(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            code, body = route(self.path, token if scheme == "token" else None)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hub/api"
    finally:
        server.shutdown()
