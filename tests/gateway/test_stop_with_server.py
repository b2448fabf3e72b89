"""`auth.stop_clusters_with_server`: with JupyterHub auth, the
gateway asks the Hub (with its service token) whether each cluster owner
still has a single-user server, and stops the clusters of those who have
none. The Hub here answers `GET /hub/api/user` and `GET /hub/api/users/<name>`
as JupyterHub 6 does; the client is the real dask-gateway client."""

import secrets
import time
from urllib.parse import unquote

import pytest
from dask_gateway import Gateway
from dask_gateway.auth import JupyterHubAuth
from gatewaylib import Gateway as GatewayProcess
from gatewaylib import live_view
from hublib import Hub, stand_in_spawner
from testlib import fake_hub, poll

SERVICE_TOKEN = "gateway-service-token"
SCOPES = ["self", "access:services!service=dask-gateway"]
USERS = {"alice-token": "alice", "bob-token": "bob"}
# Each user's servers, as the Hub's user model has them; the test empties alice's.
SERVERS = {"alice": {"": {"ready": True}}, "bob": {"": {"ready": True}}}
ASKED_WITH = []


def hub_answer(path, token):
    if path == "/hub/api/user" and token in USERS:
        return 200, {"kind": "user", "name": USERS[token], "admin": False, "groups": [], "scopes": SCOPES}
    if path.startswith("/hub/api/users/"):
        ASKED_WITH.append(token)
        name = unquote(path.removeprefix("/hub/api/users/"))
        if token == SERVICE_TOKEN:
            if name in SERVERS:
                return 200, {"kind": "user", "name": name, "servers": SERVERS[name]}
            return 404, {"status": 404, "message": "no such user"}
    return 403, {"status": 403, "message": "forbidden"}


@pytest.fixture
def hub():
    with fake_hub(hub_answer) as url:
        yield url


@pytest.mark.timeout(120)
def test_clusters_stop_once_their_owners_server_is_gone(start_gateway, hub):
    gw = start_gateway(
        f'[auth]\ntype = "jupyterhub"\njupyterhub_api_url = "{hub}"\njupyterhub_api_token = "{SERVICE_TOKEN}"\n'
        "stop_clusters_with_server = true\nserver_check_period = 1\n"
    )
    alice = Gateway(gw.address, auth=JupyterHubAuth(api_token="alice-token"))
    bob = Gateway(gw.address, auth=JupyterHubAuth(api_token="bob-token"))
    alices, bobs = alice.new_cluster(), bob.new_cluster()
    # Both have servers: a few checks later, both clusters still run.
    poll(lambda: ASKED_WITH.count(SERVICE_TOKEN) >= 4, 30, "the gateway to ask the Hub")
    assert set(ASKED_WITH) == {SERVICE_TOKEN}, "the Hub is asked with the service's own token"
    assert [c.name for c in alice.list_clusters()] == [alices.name]

    SERVERS["alice"] = {}  # alice stopped her server
    poll(lambda: alices.name in [c.name for c in alice.list_clusters(status="STOPPED")], 30,
         "alice's cluster to stop with her server")
    assert [c.name for c in bob.list_clusters()] == [bobs.name]
    bobs.shutdown()
    alices.close()
    alice.close()
    bob.close()


def test_the_option_needs_jupyterhub_auth(start_gateway):
    with pytest.raises(AssertionError, match="stop_clusters_with_server"):
        start_gateway("[auth]\nstop_clusters_with_server = true\n")


@pytest.mark.timeout(180)
def test_with_a_real_hub_a_cluster_stops_when_its_owners_spawned_server_stops(tmp_path):
    """The same with a real JupyterHub whose spawner starts and stops the
    user's server (tests/gateway/notebook_server.py, a stand-in process),
    the gateway's service granted `read:servers` as the docs say, after
    `server_stop_grace`, and the page says why."""
    grace = 3
    hub = Hub(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir()
    service_token = secrets.token_hex(32)
    gw = GatewayProcess(tmp_path, f"""
[auth]
type = "jupyterhub"
jupyterhub_api_url = "{hub.api_url}"
jupyterhub_api_token = "{service_token}"
stop_clusters_with_server = true
server_check_period = 1
server_stop_grace = {grace}
""")
    try:
        hub.start(services=[Hub.service("dask-gateway", service_token, url=gw.address)],
                  roles=[{"name": "gateway-servers", "scopes": ["read:users:name", "read:servers"],
                          "services": ["dask-gateway"]}],
                  extra_config=stand_in_spawner(reports, gw.address, f"gateway://127.0.0.1:{gw.port}", gw.address,
                                                NOTEBOOK_CELLS="probe"))
        for user in ("erin", "frank"):
            hub.add_user(user)
            hub.spawn(user)
        tokens = {user: hub.new_token(user)[0] for user in ("erin", "frank")}
        clients = {user: Gateway(gw.address, auth=JupyterHubAuth(api_token=token)) for user, token in tokens.items()}
        clusters = {user: client.new_cluster() for user, client in clients.items()}
        hub.stop_server("erin")
        gone_at = time.monotonic()
        poll(lambda: clusters["erin"].name in [c.name for c in clients["erin"].list_clusters(status="STOPPED")], 30,
             "erin's cluster to stop with her server")
        assert time.monotonic() - gone_at >= grace, "stopped within the grace"
        assert live_view(gw, token=tokens["erin"])[clusters["erin"].name]["reason"] == \
            "its owner's JupyterHub server stopped"
        # frank's server still runs: his cluster too, several checks later.
        assert [c.name for c in clients["frank"].list_clusters()] == [clusters["frank"].name]
        clusters["frank"].shutdown()
        for client in clients.values():
            client.close()
    finally:
        hub.stop()
        gw.stop()
