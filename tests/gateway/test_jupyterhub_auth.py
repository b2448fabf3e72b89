"""JupyterHub token auth: the gateway asks the Hub's REST API who a token
belongs to (`GET <hub>/user` with `Authorization: token <t>`). The Hub here
is a minimal HTTP server answering that one endpoint as JupyterHub does
(test_jupyterhub_real runs the real one);
the client is the real dask-gateway client with its `jupyterhub` auth."""

import pytest
from dask_gateway import Gateway
from dask_gateway.auth import JupyterHubAuth
from testlib import fake_hub

TOKENS = {
    "alice-token": {"kind": "user", "name": "alice", "admin": False, "groups": [], "scopes": ["access:services"]},
    "svc-token": {"kind": "service", "name": "cron", "admin": False, "scopes": ["access:services"]},
    "root-token": {"kind": "user", "name": "root", "admin": True, "groups": [], "scopes": ["access:services!service=dask-gateway"]},
    "narrow-token": {"kind": "user", "name": "bob", "admin": False, "groups": [], "scopes": ["read:users:name!user=bob"]},
}


def hub_answer(path, token):
    user = TOKENS.get(token) if path == "/hub/api/user" else None
    if user:
        return 200, user
    # A token "status-429" gets that answer (and internal words the gateway must not pass on).
    code = int(token.removeprefix("status-")) if token and token.startswith("status-") else 403
    return code, {"status": code, "message": "internal details of the Hub"}


@pytest.fixture
def hub():
    with fake_hub(hub_answer) as url:
        yield url


def test_hub_tokens_identify_users_kinds_and_admins(start_gateway, hub):
    gw = start_gateway(f'[auth]\ntype = "jupyterhub"\njupyterhub_api_url = "{hub}"\n')
    status, body, headers = gw.request("GET", "/api/v1/clusters/")
    assert (status, headers["WWW-Authenticate"]) == (401, "jupyterhub")
    assert gw.request("GET", "/api/v1/clusters/", headers={"Authorization": "jupyterhub nobody-token"})[0] == 401

    client = Gateway(gw.address, auth=JupyterHubAuth(api_token="alice-token"))
    assert client.list_clusters() == []
    name = gw.request("POST", "/api/v1/clusters/", headers={"Authorization": "jupyterhub svc-token"}, body={})[1]["name"]
    # A service's cluster belongs to "service:cron": alice may not see it, the Hub admin may.
    assert gw.request("GET", f"/api/v1/clusters/{name}", headers={"Authorization": "jupyterhub alice-token"})[:2] == (
        403, {"error": f"User alice lacks permissions to view cluster {name}"})
    assert name in gw.request("GET", "/api/v1/clusters/", headers={"Authorization": "jupyterhub root-token"})[1]
    gw.request("DELETE", f"/api/v1/clusters/{name}", headers={"Authorization": "jupyterhub svc-token"})
    # By default any user's token passes, as with dask-gateway-server: a
    # notebook server's own token lacks the service's access scope.
    assert gw.request("GET", "/api/v1/clusters/", headers={"Authorization": "jupyterhub narrow-token"})[:2] == (200, {})
    client.close()


def test_with_the_scope_required_a_token_without_it_gets_403_naming_it(start_gateway, hub):
    gw = start_gateway(f'[auth]\ntype = "jupyterhub"\njupyterhub_api_url = "{hub}"\n'
                       'jupyterhub_require_access_scope = true\n')
    status, body, _ = gw.request("GET", "/api/v1/clusters/", headers={"Authorization": "jupyterhub narrow-token"})
    assert status == 403 and "access:services!service=dask-gateway" in body["error"], body
    assert gw.request("GET", "/api/v1/clusters/", headers={"Authorization": "jupyterhub alice-token"})[:2] == (200, {})


def test_a_hub_managed_gateway_takes_the_hub_api_from_its_environment(start_gateway, hub):
    """Run by the Hub as a managed service, the gateway gets JUPYTERHUB_API_URL
    and JUPYTERHUB_API_TOKEN and needs no Hub address in its config."""
    gw = start_gateway('[auth]\ntype = "jupyterhub"\n',
                       env={"JUPYTERHUB_API_URL": hub, "JUPYTERHUB_API_TOKEN": "svc-token"})
    assert gw.request("GET", "/api/v1/clusters/", headers={"Authorization": "jupyterhub alice-token"})[:2] == (200, {})


def test_hub_refusals_are_401_429_or_503_not_500(start_gateway, hub):
    gw = start_gateway(f'[auth]\ntype = "jupyterhub"\njupyterhub_api_url = "{hub}"\n')
    expected = {400: 401, 403: 401, 429: 429, 418: 503, 500: 502, 503: 502}
    answers = {hub_code: gw.request("GET", "/api/v1/clusters/", headers={"Authorization": f"jupyterhub status-{hub_code}"})
               for hub_code in expected}
    assert {hub_code: answer[0] for hub_code, answer in answers.items()} == expected
    assert not any("internal details" in answer[1]["error"] for answer in answers.values())
