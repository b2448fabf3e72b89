"""Dashboards for their owner only, checked in a real headless Chromium.

mallory adds a page to her own scheduler (a Tornado handler registered with
`client.run_on_scheduler`), and alice, signed in to the gateway in her
browser, opens mallory's dashboard link. Before the sandbox, that page ran on
the gateway's origin and its `fetch('/api/v1/clusters/')` read alice's
clusters, TLS keys included. Also: the owner's link opens in a fresh browser
with no login and the Bokeh page renders (its websocket included); another
user gets 403; anonymous visitors get 401; the gateway's credentials never
reach a scheduler; the raw path does."""

import asyncio
import json
import sys
import urllib.parse
from pathlib import Path

import aiohttp
import cloudpickle
import pytest
import requests
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def add_pages(dask_scheduler=None):
    """Runs in mallory's scheduler: a page that tries to act as its visitor,
    and one that echoes what the scheduler receives."""
    import json as _json

    from tornado import web

    page = """<!doctype html><html><head><title>probing</title></head><body><pre id="out">pending</pre>
<script>
async function probe() {
  const results = {};
  for (const [label, options] of [["default", {}], ["include", {credentials: "include"}]]) {
    try {
      const response = await fetch("/api/v1/clusters/", {...options, signal: AbortSignal.timeout(5000)});
      results[label] = response.status + " " + await response.text();
    } catch (e) { results[label] = "error " + e; }
  }
  try { results.cookie = document.cookie; } catch (e) { results.cookie = "error " + e.name; }
  try { results.storage = String(window.localStorage.length); } catch (e) { results.storage = "error " + e.name; }
  document.getElementById("out").textContent = JSON.stringify(results);
  document.title = "probed";
}
probe();
</script></body></html>"""

    class Probe(web.RequestHandler):
        def get(self):
            self.set_header("Content-Type", "text/html")
            self.write(page)

    class Plant(web.RequestHandler):
        def get(self):
            # A scheduler trying to plant the gateway's session cookie.
            self.set_header("Set-Cookie", "dask-gateway=planted-by-mallory; Path=/")
            self.write("planted")

    class Echo(web.RequestHandler):
        def get(self, _rest):
            self.write(_json.dumps({"uri": self.request.uri, "headers": dict(self.request.headers)}))

    dask_scheduler.http_application.add_handlers(r".*", [(r"/probe", Probe), (r"/plant", Plant), (r"/echo(.*)", Echo)])


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def screenshot(driver, name):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def session_cookie(gw, user):
    response = requests.get(gw.address + "/api/v1/options", auth=(user, ""), timeout=10)
    assert response.status_code == 200
    return response.cookies["dask-gateway"]


async def websocket_status(url, headers=None):
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
                return 101 if not ws.closed else 0
        except aiohttp.WSServerHandshakeError as e:
            return e.status


@pytest.fixture
def gateway(start_gateway):
    return start_gateway('[auth]\nadmins = ["root"]\n')


@pytest.fixture
def clusters(gateway):
    """(alice's cluster, mallory's cluster), running, mallory's with her pages."""
    alice = Gateway(gateway.address, auth=BasicAuth("alice", ""))
    mallory = Gateway(gateway.address, auth=BasicAuth("mallory", ""))
    mine, evil = alice.new_cluster(), mallory.new_cluster()
    client = evil.get_client()
    try:
        # Sent by value: the scheduler cannot import this test module.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        client.run_on_scheduler(add_pages)
        yield mine, evil
    finally:
        client.close()
        for cluster in (mine, evil):
            cluster.shutdown()
        alice.close()
        mallory.close()


@pytest.mark.timeout(240)
def test_a_schedulers_page_cannot_act_as_its_visitor(gateway, clusters):
    mine, evil = clusters
    probe = evil.dashboard_link.replace("/status", "/probe")
    driver = browser()
    try:
        # alice signs in: her session cookie, as the gateway set it, in her browser.
        driver.get(gateway.address + "/api/health")
        alice_session = session_cookie(gateway, "alice")
        driver.add_cookie({"name": "dask-gateway", "value": alice_session, "path": "/", "httpOnly": True, "sameSite": "Lax"})
        driver.get(gateway.address + "/api/v1/clusters/")
        assert mine.name in driver.page_source, "alice's browser is not signed in"

        driver.get(probe)
        WebDriverWait(driver, 30).until(lambda d: d.title == "probed")
        results = json.loads(driver.find_element("id", "out").text)
        print("what mallory's page got:", results)
        screenshot(driver, "mallory-page-in-alices-browser")
        for label in ("default", "include"):
            assert mine.name not in results[label] and "tls_key" not in results[label], results
            assert not results[label].startswith("200"), results
        # An opaque origin: no cookies or storage of the gateway's origin.
        assert results["cookie"].startswith("error") and results["storage"].startswith("error"), results
        # A scheduler's Set-Cookie never reaches the browser.
        driver.get(evil.dashboard_link.replace("/status", "/plant"))
        assert "planted" in driver.page_source
        assert {c["name"]: c["value"] for c in driver.get_cookies()}["dask-gateway"] == alice_session
    finally:
        driver.quit()


@pytest.mark.timeout(240)
def test_the_owners_link_opens_in_a_fresh_browser_and_nobody_elses_does(gateway, clusters):
    mine, evil = clusters
    link = mine.dashboard_link
    route = urllib.parse.urlsplit(link).path
    assert route.startswith(f"/clusters/{mine.name}/~") and route.endswith("/status"), link
    bare = f"{gateway.address}/clusters/{mine.name}/status"
    forged = f"{gateway.address}/clusters/{mine.name}/~{'0' * 64}/status"

    driver = browser()
    try:
        driver.get(link)
        rendered = "return !!(window.Bokeh && Bokeh.documents.length && Bokeh.documents[0].roots().length)"
        # The document arrives over the websocket: rendered roots prove it works sandboxed.
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(rendered))
        screenshot(driver, "alice-dashboard-fresh-browser")
        assert driver.current_url == link
    finally:
        driver.quit()

    # The cluster name alone, or a made-up capability, is never enough.
    for url in (bare, forged):
        anonymous = requests.get(url, allow_redirects=False, timeout=10)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Basic", url
        bob = requests.get(url, auth=("bob", ""), allow_redirects=False, timeout=10)
        assert bob.status_code == 403 and "lacks permissions" in bob.json()["error"], url
    # The owner's and an admin's credentials lead to the capability URL.
    for user in ("alice", "root"):
        owner = requests.get(bare, auth=(user, ""), allow_redirects=False, timeout=10)
        assert owner.status_code == 302 and owner.headers["Location"] == route, user
    ws = f"{gateway.address.replace('http', 'ws')}/clusters/{mine.name}"
    token = route.split("/")[3]
    assert asyncio.run(websocket_status(f"{ws}/status/ws")) == 401
    bob_auth = {"Authorization": "Basic Ym9iOg=="}
    assert asyncio.run(websocket_status(f"{ws}/status/ws", bob_auth)) == 403
    assert asyncio.run(websocket_status(f"{ws}/{token}/eventstream")) == 101
    # The owner's credentials open it from the gateway's pages, never from another site's.
    alice_auth = {"Authorization": "Basic YWxpY2U6"}
    assert asyncio.run(websocket_status(f"{ws}/eventstream", alice_auth)) == 101
    evil_site = {**alice_auth, "Origin": "https://evil.example"}
    assert asyncio.run(websocket_status(f"{ws}/eventstream", evil_site)) == 403

    # Every dashboard answer is sandboxed.
    page = requests.get(link, timeout=10)
    assert page.status_code == 200 and b"bokeh" in page.content.lower()
    assert page.headers["Content-Security-Policy"].startswith("sandbox allow-scripts")
    assert "allow-same-origin" not in page.headers["Content-Security-Policy"]


def test_the_gateways_credentials_never_reach_a_scheduler_and_paths_arrive_raw(gateway, clusters):
    _, evil = clusters
    echo = evil.dashboard_link.replace("/status", "/echo/a%2Fb%20c?x=%2F")
    cookie = f"dask-gateway={session_cookie(gateway, 'alice')}; other=1"
    seen = requests.get(echo, headers={"Cookie": cookie, "Authorization": "Basic YWxpY2U6"}, timeout=10).json()
    headers = {k.lower() for k in seen["headers"]}
    assert not headers & {"cookie", "authorization"}, seen
    assert seen["uri"] == "/echo/a%2Fb%20c?x=%2F", seen
