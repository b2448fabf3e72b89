"""The REST API's answers, byte for byte where the client depends on them:
authentication, who may touch which cluster, bad input, limits, and the
operational endpoints."""

import gc
import hashlib
import subprocess
import threading
import time

import pytest
from dask_gateway import Gateway, GatewayCluster
from dask_gateway.auth import BasicAuth

from gatewaylib import gateway_bin
from testlib import client_raises


def create_running(gw, user, options=None):
    status, body, _ = gw.request("POST", "/api/v1/clusters/", user, {"cluster_options": options or {}})
    assert status == 201, body
    name = body["name"]
    deadline = time.time() + 60
    while time.time() < deadline:
        status, cluster, _ = gw.request("GET", f"/api/v1/clusters/{name}?wait", user)
        assert status == 200
        if cluster["status"] == "RUNNING":
            return cluster
    raise AssertionError(f"cluster {name} did not start")


def active_names(gw, user):
    status, clusters, _ = gw.request("GET", "/api/v1/clusters/", user)
    assert status == 200
    return sorted(clusters)


def test_unauthenticated_requests_get_the_challenge_then_a_session(gateway):
    status, body, headers = gateway.request("GET", "/api/v1/options")
    assert (status, body, headers["WWW-Authenticate"]) == (401, {"error": "Authentication required"}, "Basic")
    status, _, headers = gateway.request("GET", "/api/v1/options", "alice")
    assert status == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    status, body, _ = gateway.request("GET", "/api/v1/options", headers={"Cookie": cookie})
    assert status == 200 and body["cluster_options"][0]["field"] == "profile"
    # Public endpoints need nothing.
    assert gateway.request("GET", "/api/health")[:2] == (200, {"status": "pass"})
    assert gateway.request("GET", "/api/version")[0] == 200


@pytest.mark.timeout(120)
def test_users_only_see_and_touch_their_own_clusters(start_gateway):
    gw = start_gateway('[auth]\nadmins = ["root"]\n')
    cluster = create_running(gw, "alice")
    name = cluster["name"]
    assert set(cluster) == {"name", "dashboard_route", "status", "start_time", "stop_time", "options", "tls_cert", "tls_key"}
    assert cluster["options"] == {"profile": "small"}

    assert active_names(gw, "bob") == []
    denied = [
        ("GET", f"/api/v1/clusters/{name}", None, f"User bob lacks permissions to view cluster {name}"),
        ("POST", f"/api/v1/clusters/{name}/scale", {"count": 1}, f"User bob lacks permissions to scale cluster {name}"),
        ("POST", f"/api/v1/clusters/{name}/adapt", {"minimum": 0, "maximum": 2}, f"User bob lacks permissions to scale cluster {name}"),
        ("DELETE", f"/api/v1/clusters/{name}", None, f"User bob lacks permissions to stop cluster {name}"),
    ]
    for method, path, body, message in denied:
        assert gw.request(method, path, "bob", body)[:2] == (403, {"error": message}), (method, path)
    # A scheduler heartbeat needs the cluster's own token.
    beat = {"scheduler_address": "tls://x:1", "api_address": "http://x:2", "count": 9}
    status, _, headers = gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", "bob", beat)
    assert (status, headers["WWW-Authenticate"]) == (401, "token")
    status, _, _ = gw.request("POST", f"/api/v1/clusters/{name}/heartbeat", None, beat, headers={"Authorization": "token forged"})
    assert status == 401

    # Nothing of the above changed it; the admin sees it; the owner stops it.
    assert gw.request("GET", f"/api/v1/clusters/{name}", "alice")[1]["status"] == "RUNNING"
    assert active_names(gw, "root") == [name]
    assert gw.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    assert active_names(gw, "alice") == []
    # DELETE is idempotent, even for names that never existed.
    assert gw.request("DELETE", f"/api/v1/clusters/{name}", "alice")[0] == 204
    assert gw.request("DELETE", "/api/v1/clusters/nonexistent", "alice")[0] == 204


@pytest.mark.timeout(120)
def test_bad_input_gets_a_4xx_and_creates_nothing(gateway):
    cases = [
        (b"{not json", 422, "Invalid JSON body"),
        (b'{"cluster_options": {"bogus": 1}}', 422, "Unknown fields ['bogus']"),
        (b'{"cluster_options": {"profile": "huge"}}', 422, "'huge' is not a valid option for profile"),
        (b'{"cluster_options": {"profile": 3}}', 422, "3 is not a valid option for profile"),
        (b'{"cluster_options": [1]}', 422, "cluster_options must be an object"),
    ]
    for raw, code, message in cases:
        status, body, _ = gateway.request("POST", "/api/v1/clusters/", "alice", raw=raw)
        assert status == code and message in body["error"], (raw, status, body)
    status, clusters, _ = gateway.request("GET", "/api/v1/clusters/?status=PENDING,RUNNING,STOPPING,STOPPED,FAILED", "alice")
    assert (status, clusters) == (200, {})

    assert gateway.request("GET", "/api/v1/clusters/?status=bogus", "alice")[:2] == (422, {"error": "'bogus' is not a valid ClusterStatus"})
    assert gateway.request("GET", "/api/v1/clusters/nope", "alice")[:2] == (404, {"error": "Cluster nope not found"})
    assert gateway.request("POST", "/api/v1/clusters/nope/scale", "alice", {"count": 1})[0] == 404

    name = create_running(gateway, "alice")["name"]
    for count in [-1, 1.5, "2", None]:
        status, body, _ = gateway.request("POST", f"/api/v1/clusters/{name}/scale", "alice", {"count": count})
        assert status == 422 and "non-negative integer" in body["error"], (count, body)
    status, body, _ = gateway.request("POST", f"/api/v1/clusters/{name}/adapt", "alice", {"minimum": 3, "maximum": 1})
    assert status == 422
    status, body, _ = gateway.request("POST", f"/api/v1/clusters/{name}/scale", "alice", raw=b"[")
    assert status == 422

    # The real client turns these into ValueError with the server's words.
    client = Gateway(gateway.address, auth=BasicAuth("alice", ""))
    client_raises(ValueError, r"Unknown fields \['bogus'\]", client.new_cluster, bogus=1)
    client_raises(ValueError, "not found", client.connect, "nope")
    client.close()


def test_a_refused_client_call_leaves_no_garbage_that_blocks_the_client_loop(gateway):
    # Regression: garbage collection on the client's IO loop thread used to
    # deadlock it when a refused new_cluster had left its cluster to the GC.
    client = Gateway(gateway.address, auth=BasicAuth("alice", ""))
    client_raises(ValueError, r"Unknown fields \['bogus'\]", client.new_cluster, bogus=1)
    # Checked first, as a deadlocked loop would also hang the test's cleanup.
    assert not [o for o in gc.get_objects() if isinstance(o, GatewayCluster)]
    collected = threading.Event()
    client.loop.add_callback(lambda: (gc.collect(), collected.set()))
    assert collected.wait(10), "a GC on the client's IO loop thread blocked it"
    client_raises(ValueError, "not found", client.connect, "nope")
    client.close()


@pytest.mark.timeout(120)
def test_limits_clamp_or_refuse_with_clear_messages(start_gateway):
    gw = start_gateway("[limits]\nuser_max_clusters = 1\ncluster_max_workers = 2\n")
    name = create_running(gw, "alice")["name"]
    status, body, _ = gw.request("POST", "/api/v1/clusters/", "alice", {})
    assert status == 409 and "limit is 1" in body["error"]
    # Another user has a quota of their own.
    assert gw.request("POST", "/api/v1/clusters/", "bob", {})[0] == 201

    status, body, _ = gw.request("POST", f"/api/v1/clusters/{name}/scale", "alice", {"count": 5})
    assert (status, body) == (200, {"ok": False, "msg": "Scale request of 5 workers would exceed resource limit of 2 workers. Scaling to 2 instead."})
    status, body, _ = gw.request("POST", f"/api/v1/clusters/{name}/adapt", "alice", {"minimum": 1, "maximum": 10, "active": True})
    assert body["msg"] == ("Adapt with `maximum=10, minimum=1` workers would exceed resource limit of 2 workers. "
                           "Using `maximum=2, minimum=1` instead.")
    assert gw.request("POST", f"/api/v1/clusters/{name}/scale", "alice", {"count": 1})[1] == {"ok": True, "msg": None}


def test_users_file_with_hashed_passwords(start_gateway, tmp_path):
    hashed = subprocess.run([gateway_bin(), "hash-password"], input="s3cret\n", capture_output=True, text=True, check=True).stdout.strip()
    assert hashed.startswith("$argon2")
    users = tmp_path / "users.toml"
    users.write_text(f'[users.alice]\npassword = "{hashed}"\n')
    gw = start_gateway(f'[auth]\ntype = "basic"\nusers_file = "{users}"\n')
    from base64 import b64encode
    def with_password(password):
        token = b64encode(f"alice:{password}".encode()).decode()
        return gw.request("GET", "/api/v1/options", headers={"Authorization": f"Basic {token}"})[0]
    assert with_password("wrong") == 401
    assert with_password("s3cret") == 200
    assert "s3cret" not in gw.log_path.read_text()


def test_static_api_tokens(start_gateway):
    token = "a-long-random-token"
    gw = start_gateway(f'[[auth.tokens]]\nuser = "ci-bot"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n')
    assert gw.request("GET", "/api/v1/clusters/", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert gw.request("GET", "/api/v1/clusters/", headers={"Authorization": "Bearer wrong"})[0] == 401


def test_a_bad_config_key_is_named(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\nuser_max_clusterz = 2\n")
    proc = subprocess.run([gateway_bin(), "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "user_max_clusterz" in proc.stderr


def test_openapi_and_metrics(gateway):
    status, doc, _ = gateway.request("GET", "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/api/v1/clusters/", "/api/v1/clusters/{name}", "/api/v1/clusters/{name}/scale",
            "/api/v1/clusters/{name}/adapt", "/api/v1/clusters/{name}/heartbeat", "/api/v1/options",
            "/api/v1/clusters/{name}/logs", "/api/v1/admin/summary", "/api/v1/events"} <= set(doc["paths"])
    gateway.request("GET", "/api/v1/options", "alice")
    import urllib.request
    text = urllib.request.urlopen(gateway.address + "/metrics").read().decode()
    assert 'dask_gateway_http_requests_total{method="GET",route="/api/v1/options",status="200"} 1' in text
    assert 'dask_gateway_clusters{status="running"} 0' in text
