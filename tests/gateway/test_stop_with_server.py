"""`auth.stop_clusters_with_server` (issue 13): with JupyterHub auth, the
gateway asks the Hub (with its service token) whether each cluster owner
still has a single-user server, and stops the clusters of those who have
none. The Hub here answers `GET /hub/api/user` and `GET /hub/api/users/<name>`
as JupyterHub 6 does; the client is the real dask-gateway client."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest
from dask_gateway import Gateway
from dask_gateway.auth import JupyterHubAuth
from testlib import poll

SERVICE_TOKEN = "gateway-service-token"
SCOPES = ["self", "access:services!service=dask-gateway"]
USERS = {"alice-token": "alice", "bob-token": "bob"}
# Each user's servers, as the Hub's user model has them; the test empties alice's.
SERVERS = {"alice": {"": {"ready": True}}, "bob": {"": {"ready": True}}}
ASKED_WITH = []


class HubAPI(BaseHTTPRequestHandler):
    def do_GET(self):
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        body, code = {"status": 403, "message": "forbidden"}, 403
        if self.path == "/hub/api/user" and token in USERS:
            body, code = {"kind": "user", "name": USERS[token], "admin": False, "groups": [], "scopes": SCOPES}, 200
        elif self.path.startswith("/hub/api/users/"):
            ASKED_WITH.append(token)
            name = unquote(self.path.removeprefix("/hub/api/users/"))
            if token == SERVICE_TOKEN and name in SERVERS:
                body, code = {"kind": "user", "name": name, "servers": SERVERS[name]}, 200
            elif token == SERVICE_TOKEN:
                body, code = {"status": 404, "message": "no such user"}, 404
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hub/api"
    server.shutdown()


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
