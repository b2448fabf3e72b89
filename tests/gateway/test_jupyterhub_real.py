"""The gateway as a service of a REAL JupyterHub (6.1.1 from PyPI, its
proxy from npm; see tests/hublib.py), registered as a Hub deployment does:
`c.JupyterHub.services` with its API token and URL, the `user` role granted
`access:services!service=dask-gateway`. The gateway is served under
`/services/dask-gateway` and reached directly (the API client) or through
the Hub's proxy (the browser), with the real dask-gateway client.

- the token the Hub gives a server it spawns (the `server` role's scopes,
  no access:services) runs the seed notebook's cells with `Gateway()`;
- any user's token is accepted by default, as by dask-gateway-server; with
  `jupyterhub_require_access_scope` a token without the scope gets 403
  naming it, and the documented recipe (`c.Spawner.server_token_scopes`)
  grants it to servers' tokens;
- groups set limits and the profiles offered and accepted;
- a token revoked at the Hub stops working within the cache expiry, session cookie included;
- a browser with no session logs in through the Hub's OAuth and lands on the dashboard.
"""

import json
import re
import secrets
from urllib.parse import urljoin

import dask.array as da
import pytest
import requests
from dask_gateway import Gateway
from dask_gateway.auth import JupyterHubAuth
from gatewaylib import Gateway as GatewayProcess
from hublib import Hub, stand_in_spawner
from hub_notebook import daily_temperatures, seed_cells
from testlib import poll

PREFIX = "/services/dask-gateway"
CACHE_SECONDS = 2
# The Hub's default for the tokens of the servers it spawns (its `server` role).
SERVER_ROLE_SCOPES = ["users:activity!user", "access:servers!server"]


def notebook_report(hub, report_dir, user, timeout):
    """What `user`'s spawned server reported, once it has."""
    path = report_dir / f"{user}.json"
    poll(path.exists, timeout, f"{user}'s notebook server to report; hub log: {hub.log_path}")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """(hub, gateway process): the gateway configured as the Hub's service."""
    tmp = tmp_path_factory.mktemp("hub")
    hub = Hub(tmp)
    reports = tmp / "reports"
    reports.mkdir()
    service_token = secrets.token_hex(32)
    gw = GatewayProcess(tmp, f"""
[auth]
type = "jupyterhub"
jupyterhub_api_url = "{hub.api_url}"
jupyterhub_api_token = "{service_token}"
jupyterhub_cache_seconds = {CACHE_SECONDS}
default_profiles = ["small"]

[auth.groups.staff]
profiles = ["small", "medium"]
cluster_max_workers = 2

[limits]
cluster_max_workers = 1
""", prefix=PREFIX)
    try:
        # Behind the Hub's proxy at /services/dask-gateway/, with the Hub's
        # defaults: OAuth client `service-dask-gateway`, redirect URI
        # /services/dask-gateway/oauth_callback, authorize at /hub/api/oauth2/authorize.
        hub.start(
            services=[Hub.service("dask-gateway", service_token, url=gw.address)],
            user_scopes=["self", "access:services!service=dask-gateway"],
            extra_config=stand_in_spawner(reports, gw.address + PREFIX, f"gateway://127.0.0.1:{gw.port}",
                                          hub.public_url + PREFIX),
        )
        hub.add_user("alice", groups=["staff"])
        hub.add_user("bob")
        hub.reports = reports
        yield hub, gw
    finally:
        hub.stop()
        gw.stop()


def api(gw, method, path, token, body=None):
    return gw.request(method, PREFIX + path, body=body, headers={"Authorization": f"jupyterhub {token}"})


def client(gw, token):
    return Gateway(gw.address + PREFIX, proxy_address=f"gateway://127.0.0.1:{gw.port}",
                   auth=JupyterHubAuth(api_token=token))


@pytest.mark.timeout(240)
def test_the_token_of_a_server_the_hub_spawned_runs_the_notebook_cells(deployment):
    hub, gw = deployment
    hub.add_user("carol", groups=["staff"])
    hub.spawn("carol")
    try:
        report = notebook_report(hub, hub.reports, "carol", 180)
    finally:
        hub.stop_server("carol")
    assert "error" not in report, report.get("error")
    # The server's own token: the `server` role's scopes, not the user's.
    assert not any(s.startswith("access:services") for s in report["token_scopes"]), report["token_scopes"]
    assert any(s.startswith("users:activity!user") for s in report["token_scopes"]), report["token_scopes"]
    cells = report["cells"]
    assert cells["profiles"] == ["small", "medium"] and len(cells["workers"]) == 2, cells
    assert cells["dashboard"] == [200, True], cells
    assert cells["cluster"] not in cells["clusters_after_shutdown"]
    ds = daily_temperatures()
    yearly, _, _ = seed_cells(ds)
    assert cells["yearly"] == pytest.approx(yearly.values.tolist())
    # carol's cluster was carol's: bob may not see even its record.
    bob, _ = hub.new_token("bob")
    status, body, _ = api(gw, "GET", f"/api/v1/clusters/{cells['cluster']}", bob)
    assert status == 403, body


@pytest.mark.timeout(180)
def test_with_the_scope_required_the_recipe_grants_it_to_servers_tokens(tmp_path):
    """`jupyterhub_require_access_scope = true`: a server's token with the
    Hub's default scopes gets 403 naming the scope; a Hub with the documented
    `c.Spawner.server_token_scopes` line gets through."""
    results = {}
    for recipe in ("default", "server_token_scopes"):
        hub = Hub(tmp_path / recipe)
        reports = tmp_path / recipe / "reports"
        reports.mkdir(parents=True)
        service_token = secrets.token_hex(32)
        gw = GatewayProcess(tmp_path / recipe, f"""
[auth]
type = "jupyterhub"
jupyterhub_api_url = "{hub.api_url}"
jupyterhub_api_token = "{service_token}"
jupyterhub_require_access_scope = true
""", prefix=PREFIX)
        grant = "" if recipe == "default" else (
            "c.Spawner.server_token_scopes = "
            + json.dumps([*SERVER_ROLE_SCOPES, "access:services!service=dask-gateway"]) + "\n")
        try:
            hub.start(services=[Hub.service("dask-gateway", service_token, url=gw.address)],
                      user_scopes=["self", "access:services!service=dask-gateway"],
                      extra_config=stand_in_spawner(reports, gw.address + PREFIX, f"gateway://127.0.0.1:{gw.port}",
                                                    hub.public_url + PREFIX, NOTEBOOK_CELLS="probe") + grant)
            hub.add_user("dave")
            hub.spawn("dave")
            results[recipe] = notebook_report(hub, reports, "dave", 60)
        finally:
            hub.stop()
            gw.stop()
    status, body = results["default"]["options"]
    assert status == 403 and "access:services!service=dask-gateway" in body["error"], body
    assert "server_token_scopes" in body["error"], body
    status, body = results["server_token_scopes"]["options"]
    assert status == 200 and body["cluster_options"], body
    assert "access:services!service=dask-gateway" in results["server_token_scopes"]["token_scopes"]


@pytest.mark.timeout(180)
def test_any_users_token_runs_a_cluster_and_unknown_tokens_get_401(deployment):
    hub, gw = deployment
    token, _ = hub.new_token("alice")
    narrow, _ = hub.new_token("alice", scopes=["read:users:name!user=alice"])

    # As with dask-gateway-server, the Hub's word that the token is alice's is enough.
    assert api(gw, "GET", "/api/v1/clusters/", narrow)[0] == 200
    # A token the Hub does not know is a failed login, not a forbidden one.
    assert api(gw, "GET", "/api/v1/clusters/", "not-a-token")[0] == 401

    alice = client(gw, token)
    cluster = alice.new_cluster()
    try:
        cluster.scale(1)
        dask_client = cluster.get_client()
        dask_client.wait_for_workers(1, timeout=60)
        assert da.arange(100_000, chunks=10_000).sum().compute() == 4_999_950_000
        dask_client.close()
    finally:
        cluster.shutdown()
    alice.close()


@pytest.mark.timeout(120)
def test_groups_set_the_profiles_and_limits(deployment):
    hub, gw = deployment
    alice_token, _ = hub.new_token("alice")  # staff
    bob_token, _ = hub.new_token("bob")  # in no group: the defaults

    alice, bob = client(gw, alice_token), client(gw, bob_token)
    assert list(alice.cluster_options()._fields["profile"].options) == ["small", "medium"]
    assert list(bob.cluster_options()._fields["profile"].options) == ["small"]

    status, body, _ = api(gw, "POST", "/api/v1/clusters/", bob_token, {"cluster_options": {"profile": "medium"}})
    assert status == 422 and "'medium'" in body["error"] and "not allowed" in body["error"], body
    assert api(gw, "GET", "/api/v1/clusters/", bob_token)[1] == {}, "nothing half-created"

    status, body, _ = api(gw, "POST", "/api/v1/clusters/", alice_token, {"cluster_options": {"profile": "medium"}})
    assert status == 201, body
    name = body["name"]
    try:
        cluster = poll(lambda: (c := api(gw, "GET", f"/api/v1/clusters/{name}", alice_token)[1])["status"] == "RUNNING" and c,
                       60, "alice's cluster to run")
        assert cluster["options"]["profile"] == "medium"
        # Staff may have 2 workers per cluster (the default is 1).
        status, body, _ = api(gw, "POST", f"/api/v1/clusters/{name}/scale", alice_token, {"count": 5})
        assert status == 200 and body["msg"].endswith("exceed resource limit of 2 workers. Scaling to 2 instead."), body
    finally:
        api(gw, "DELETE", f"/api/v1/clusters/{name}", alice_token)
    alice.close()
    bob.close()


@pytest.mark.timeout(120)
def test_a_revoked_token_stops_working_within_the_cache_expiry(deployment):
    hub, gw = deployment
    token, token_id = hub.new_token("bob")
    session = requests.Session()
    url = gw.address + PREFIX + "/api/v1/clusters/"
    first = session.get(url, headers={"Authorization": f"jupyterhub {token}"}, timeout=30)
    assert first.status_code == 200 and "dask-gateway" in session.cookies, first.text

    hub.revoke("bob", token_id)
    # The cached answer and the session it opened end within the expiry;
    # poll() bounds the wait at the expiry plus a margin for a loaded machine.
    poll(lambda: session.get(url, timeout=30).status_code == 401, CACHE_SECONDS + 8,
         "the session of a revoked token to end")
    assert requests.get(url, headers={"Authorization": f"jupyterhub {token}"}, timeout=30).status_code == 401


def hidden_inputs(html):
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


@pytest.mark.timeout(180)
def test_a_browser_logs_in_through_the_hubs_oauth_and_opens_the_dashboard(deployment):
    hub, gw = deployment
    token, _ = hub.new_token("alice")
    alice = client(gw, token)
    cluster = alice.new_cluster()
    try:
        browser = requests.Session()
        browser.headers["Accept"] = "text/html,application/xhtml+xml"
        page = f"{hub.public_url}{PREFIX}/clusters/{cluster.name}/status"

        to_hub = browser.get(page, allow_redirects=False, timeout=30)
        assert to_hub.status_code == 302, to_hub.text
        assert re.fullmatch(
            r"/hub/api/oauth2/authorize\?client_id=service-dask-gateway"
            r"&redirect_uri=%2Fservices%2Fdask-gateway%2Foauth_callback&response_type=code&state=[0-9a-f]{64}"
            r"&code_challenge=[A-Za-z0-9_-]{43}&code_challenge_method=S256",
            to_hub.headers["Location"]), to_hub.headers["Location"]

        # The Hub asks for a login (the dummy authenticator takes any password) …
        login = browser.get(urljoin(page, to_hub.headers["Location"]), timeout=30)
        assert "/hub/login" in login.url, login.url
        landed = browser.post(login.url, data={**hidden_inputs(login.text), "username": "alice", "password": "pw"},
                              timeout=60)
        # … then, unless the service skips it, for the authorization.
        if "/hub/api/oauth2/authorize" in landed.url:
            landed = browser.post(landed.url, data=hidden_inputs(landed.text), timeout=60)

        # Back on the gateway with a session: the capability URL of the dashboard.
        assert landed.status_code == 200, (landed.url, landed.text[:500])
        assert re.fullmatch(rf"{hub.public_url}{PREFIX}/clusters/{cluster.name}/~[0-9a-f]{{64}}/status", landed.url)
        assert "bokeh" in landed.text.lower()
        assert browser.cookies.get("dask-gateway", path=PREFIX)

        # The session is the user's: the API answers with her clusters.
        assert cluster.name in browser.get(f"{hub.public_url}{PREFIX}/api/v1/clusters/", timeout=30).json()

        assert "dask-gateway-oauth-state" not in browser.cookies, "the login's state is cleared"

        # A callback needs the state of a login this browser started.
        callback = f"{hub.public_url}{PREFIX}/oauth_callback?code=x&state=y"
        missing = requests.get(callback, timeout=30, allow_redirects=False)
        assert missing.status_code == 400 and "state" in missing.json()["error"], missing.text
        forged = requests.get(callback, timeout=30, allow_redirects=False,
                              cookies={"dask-gateway-oauth-state": "z.v.Ly9ldmlsLmV4YW1wbGU"})  # "//evil.example"
        assert forged.status_code == 403 and "state" in forged.json()["error"], forged.text
    finally:
        cluster.shutdown()
    alice.close()
