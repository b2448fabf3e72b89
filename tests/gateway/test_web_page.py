"""The gateway's web page in a real headless Chromium, on the local backend,
under a path prefix, with `basic` auth (argon2 users file):

- sign in with the form (keyboard: Enter submits), a wrong password refused;
- create a cluster with a non-default profile and option fields, scale it,
  set adaptive bounds, open its dashboard (a new tab, the Bokeh page
  renders), stop it;
- a cluster made by the real Python client appears without a reload (the
  page's server-sent events), another user's cluster never does;
- an admin sees both users' clusters and the per-user summary.

Screenshots at laptop (1280x800) and phone (390x844) sizes go to
tests/artifacts/web-page-*.png."""

import subprocess
import time
from pathlib import Path

import pytest
import requests
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from gatewaylib import Gateway as GatewayProcess
from gatewaylib import gateway_bin

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PREFIX = "/services/dask-gateway"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw"}
LAPTOP = (1280, 800)
PHONE = (390, 844)
OPTIONS = """
[[options.fields]]
field = "environment"
label = "Environment"
type = "mapping"
default = {}
target = "environment"

[[options.fields]]
field = "threads"
label = "Threads per worker"
type = "int"
default = 1
min = 1
max = 2
target = "worker_threads"
"""


@pytest.fixture
def site(tmp_path):
    """A gateway under PREFIX with alice, bob and root (an admin)."""
    entries = []
    for user, password in PASSWORDS.items():
        hashed = subprocess.run([gateway_bin(), "hash-password"], input=password + "\n",
                                capture_output=True, text=True, check=True).stdout.strip()
        entries.append(f'[users.{user}]\npassword = "{hashed}"\nadmin = {"true" if user == "root" else "false"}\n')
    users = tmp_path / "users.toml"
    users.write_text("\n".join(entries))
    gw = GatewayProcess(tmp_path, f'[auth]\ntype = "basic"\nusers_file = "{users}"\n'
                        f"[cluster]\nheartbeat_period = 1\n{OPTIONS}", prefix=PREFIX)
    gw.base = gw.address + PREFIX
    clients = []

    def client(user):
        c = Gateway(gw.base, proxy_address=f"gateway://127.0.0.1:{gw.port}",
                    auth=BasicAuth(user, PASSWORDS[user]))
        clients.append(c)
        return c

    gw.client = client
    yield gw
    for c in clients:
        for report in c.list_clusters():
            c.stop_cluster(report.name)
        c.close()
    gw.stop()


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def viewport(driver, size):
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def screenshot(driver, name, size):
    viewport(driver, size)
    time.sleep(0.3)  # a layout pass at the new size
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"web-page-{name}-{size[0]}x{size[1]}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def wait(driver, condition, seconds=90, message=""):
    # A page that reloads (a form post) or re-renders (the live view) between
    # finding an element and reading it leaves a stale reference: poll again.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, seconds, poll_frequency=0.25, ignored_exceptions=ignored).until(
        lambda d: condition(d), message)


def sign_in(driver, site, user, password):
    driver.get(site.base + "/")
    wait(driver, lambda d: "/login" in d.current_url, 10, "no redirect to the login form")
    name = driver.find_element(By.ID, "username")
    assert driver.switch_to.active_element == name, "the user name field has the focus"
    name.clear()
    name.send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password + Keys.ENTER)


def signed_in_page(driver, site, user):
    sign_in(driver, site, user, PASSWORDS[user])
    wait(driver, lambda d: d.current_url == site.base + "/", 20, "not back on the page")
    assert driver.find_element(By.ID, "user-name").text == user
    # The live stream is open: its first snapshot has arrived.
    wait(driver, lambda d: d.find_element(By.ID, "connection").text.startswith("Live"), 30, "no live stream")


def row(driver, name):
    rows = driver.find_elements(By.CSS_SELECTOR, f'#clusters-body tr[data-name="{name}"]')
    return rows[0] if rows else None


def cell(driver, name, label):
    r = row(driver, name)
    return r.find_element(By.CSS_SELECTOR, f'td[data-label="{label}"]').text if r else None


def rows(driver):
    return [r.get_attribute("data-name") for r in driver.find_elements(By.CSS_SELECTOR, "#clusters-body tr")]


def api(site, user, method, path, **kwargs):
    return requests.request(method, site.base + path, auth=(user, PASSWORDS[user]), timeout=30, **kwargs)


@pytest.mark.timeout(600)
def test_a_user_signs_in_creates_scales_opens_and_stops_a_cluster(site):
    bob = site.client("bob")
    bobs = bob.new_cluster(shutdown_on_close=False)
    driver = browser()
    try:
        viewport(driver, LAPTOP)
        # A wrong password: the form again, with the reason, and no session.
        sign_in(driver, site, "alice", "not-her-password")
        message = wait(driver, lambda d: d.find_element(By.ID, "message").text, 20)
        assert message == "Wrong user name or password."
        assert not [c for c in driver.get_cookies() if c["name"] == "dask-gateway"]
        assert driver.find_element(By.ID, "username").get_attribute("value") == "alice", "the name is kept"
        screenshot(driver, "login-refused", LAPTOP)
        screenshot(driver, "login-refused", PHONE)
        viewport(driver, LAPTOP)

        signed_in_page(driver, site, "alice")
        cookie = {c["name"]: c for c in driver.get_cookies()}["dask-gateway"]
        assert cookie["httpOnly"] and cookie["path"] == PREFIX and cookie["sameSite"] == "Lax"
        assert bobs.name not in rows(driver), "bob's cluster on alice's page"

        # Create with the second profile and the option fields.
        Select(driver.find_element(By.CSS_SELECTOR, 'select[name="profile"]')).select_by_visible_text("medium")
        threads = driver.find_element(By.CSS_SELECTOR, 'input[name="threads"]')
        threads.clear()
        threads.send_keys("2")
        driver.find_element(By.CSS_SELECTOR, 'textarea[name="environment"]').send_keys("GREETING=hello from the page")
        driver.find_element(By.ID, "create-button").click()
        wait(driver, lambda d: len(rows(d)) == 1, 30, "the new cluster is not listed")
        name = rows(driver)[0]
        report = api(site, "alice", "GET", f"/api/v1/clusters/{name}").json()
        assert report["options"]["profile"] == "medium" and report["options"]["threads"] == 2
        assert report["options"]["environment"] == {"GREETING": "hello from the page"}
        assert cell(driver, name, "Profile") == "medium"
        wait(driver, lambda d: cell(d, name, "Status") == "RUNNING", 120, "the cluster did not start")

        # Scale to one worker: the row shows it (2 cores, 2 GiB: the medium profile).
        r = row(driver, name)
        r.find_element(By.CSS_SELECTOR, "details summary").click()
        workers = r.find_element(By.CSS_SELECTOR, 'form.scale input[name="count"]')
        workers.clear()
        workers.send_keys("1")
        r.find_element(By.CSS_SELECTOR, "form.scale button").click()
        wait(driver, lambda d: cell(d, name, "Workers") == "1", 60, "the scale is not shown")
        assert cell(driver, name, "Cores") == "2" and cell(driver, name, "Memory") == "2 GiB"
        with site.client("alice").connect(name).get_client() as dask_client:
            dask_client.wait_for_workers(1, timeout=120)
            assert dask_client.submit(sum, [1, 2, 3]).result(timeout=60) == 6

        # Adaptive bounds.
        r.find_element(By.CSS_SELECTOR, 'form.adapt input[name="minimum"]').clear()
        r.find_element(By.CSS_SELECTOR, 'form.adapt input[name="minimum"]').send_keys("1")
        r.find_element(By.CSS_SELECTOR, 'form.adapt input[name="maximum"]').clear()
        r.find_element(By.CSS_SELECTOR, 'form.adapt input[name="maximum"]').send_keys("2")
        r.find_element(By.CSS_SELECTOR, "form.adapt button").click()
        notice = driver.find_element(By.ID, "notice")
        wait(driver, lambda d: "adapts between 1 and 2 workers" in notice.text, 30, "adapt not confirmed")
        assert "is-error" not in notice.get_attribute("class")

        # A cluster made by the Python client appears without a reload.
        driver.execute_script("window.sameDocument = true")
        from_python = site.client("alice").new_cluster(shutdown_on_close=False)
        wait(driver, lambda d: from_python.name in rows(d), 60, "the client's cluster did not appear live")
        assert driver.execute_script("return window.sameDocument === true"), "the page was reloaded"
        assert bobs.name not in rows(driver)
        screenshot(driver, "clusters", LAPTOP)
        screenshot(driver, "clusters", PHONE)
        viewport(driver, LAPTOP)

        # The dashboard opens in a new tab and renders.
        link = row(driver, name).find_element(By.CSS_SELECTOR, "a[target=_blank]")
        assert link.text.startswith("Dashboard")
        assert link.get_attribute("target") == "_blank"
        assert link.get_attribute("href").startswith(f"{site.base}/clusters/{name}/~")
        page = driver.current_window_handle
        link.click()
        wait(driver, lambda d: len(d.window_handles) == 2, 20, "no new tab")
        driver.switch_to.window([h for h in driver.window_handles if h != page][0])
        rendered = "return !!(window.Bokeh && Bokeh.documents.length && Bokeh.documents[0].roots().length)"
        wait(driver, lambda d: d.execute_script(rendered), 90, "the dashboard did not render")
        screenshot(driver, "dashboard-tab", LAPTOP)
        driver.close()
        driver.switch_to.window(page)

        # Stop, after the confirmation.
        row(driver, name).find_element(By.CSS_SELECTOR, "button.danger").click()
        driver.switch_to.alert.accept()
        wait(driver, lambda d: cell(d, name, "Status") in ("STOPPING", "STOPPED"), 60, "not stopped")
        assert api(site, "alice", "GET", f"/api/v1/clusters/{name}").json()["status"] in ("STOPPING", "STOPPED")
        wait(driver, lambda d: cell(d, name, "Status") == "STOPPED", 60)
        assert row(driver, name).find_elements(By.CSS_SELECTOR, "button.danger")[0].is_displayed() is False

        # Signing out: back to the form, the session cookie gone, the page closed.
        driver.find_element(By.ID, "sign-out").click()
        wait(driver, lambda d: "/login" in d.current_url, 20)
        assert driver.find_element(By.ID, "message").text == "You are signed out."
        assert not [c for c in driver.get_cookies() if c["name"] == "dask-gateway"]
        driver.get(site.base + "/")
        wait(driver, lambda d: "/login" in d.current_url, 20, "the page opened without a session")
    finally:
        driver.quit()


@pytest.mark.timeout(600)
def test_an_admin_sees_every_users_clusters_with_a_summary(site):
    alices = site.client("alice").new_cluster(shutdown_on_close=False)
    bobs = site.client("bob").new_cluster(shutdown_on_close=False)
    bobs.scale(1)
    assert api(site, "bob", "GET", "/api/v1/admin/summary").status_code == 403
    driver = browser()
    try:
        viewport(driver, LAPTOP)
        signed_in_page(driver, site, "bob")
        wait(driver, lambda d: rows(d) == [bobs.name], 30, "bob sees exactly his own cluster")
        assert not driver.find_element(By.ID, "summary-section").is_displayed()
        driver.find_element(By.ID, "sign-out").click()
        wait(driver, lambda d: "/login" in d.current_url, 20)

        signed_in_page(driver, site, "root")
        assert driver.find_element(By.ID, "admin-badge").is_displayed()
        # Keyboard: the first Tab reaches the skip link, Enter jumps to the clusters.
        driver.get(site.base + "/")  # a fresh document: focus starts at the top
        wait(driver, lambda d: d.find_element(By.ID, "connection").text.startswith("Live"), 30)
        ActionChains(driver).send_keys(Keys.TAB).perform()
        assert driver.switch_to.active_element.get_attribute("class") == "skip"
        ActionChains(driver).send_keys(Keys.ENTER).perform()
        wait(driver, lambda d: d.switch_to.active_element.get_attribute("id") == "clusters-heading", 5)
        wait(driver, lambda d: set(rows(d)) == {alices.name, bobs.name}, 30, "root does not see both")
        assert cell(driver, bobs.name, "User") == "bob" and cell(driver, alices.name, "User") == "alice"
        summary = driver.find_element(By.ID, "summary-section")
        assert summary.is_displayed()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#summary-body tr[data-user="bob"] td[data-label="Workers"]')
             and d.find_element(By.CSS_SELECTOR, '#summary-body tr[data-user="bob"] td[data-label="Workers"]').text == "1",
             90, "bob's worker is not in the summary")
        users = [r.get_attribute("data-user") for r in driver.find_elements(By.CSS_SELECTOR, "#summary-body tr")]
        assert users == ["alice", "bob"]
        screenshot(driver, "admin", LAPTOP)
        screenshot(driver, "admin", PHONE)
        totals = api(site, "root", "GET", "/api/v1/admin/summary").json()["users"]
        assert [(u["user"], u["clusters"]) for u in totals] == [("alice", 1), ("bob", 1)]
    finally:
        driver.quit()


def test_the_page_is_served_with_a_strict_policy_and_no_inline_code(site):
    page = requests.get(site.base + "/", auth=("alice", PASSWORDS["alice"]), timeout=10)
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in page.text and "http" not in page.text.replace(site.base, "")
    # Another site's form cannot sign anyone in (login CSRF) or stop a cluster.
    forged = requests.post(site.base + "/login", data={"username": "alice", "password": PASSWORDS["alice"]},
                           headers={"Origin": "https://evil.example"}, allow_redirects=False, timeout=10)
    assert forged.status_code == 403 and "set-cookie" not in forged.headers


def test_with_jupyterhub_auth_a_stranger_is_sent_to_the_hub(start_gateway):
    authorize = "http://127.0.0.1:9/hub/api/oauth2/authorize"
    gw = start_gateway('[auth]\ntype = "jupyterhub"\njupyterhub_api_url = "http://127.0.0.1:9/hub/api"\n'
                       f'jupyterhub_authorize_url = "{authorize}"\n')
    driver = browser()
    try:
        # The browser is sent to the Hub's OAuth login (which is not there).
        driver.get(gw.address + "/")
        wait(driver, lambda d: d.current_url.startswith(authorize + "?"), 20, "not sent to the Hub")
        assert "response_type=code" in driver.current_url
    finally:
        driver.quit()
    # No password form under JupyterHub auth.
    form = requests.post(gw.address + "/login", data={"username": "alice", "password": "x"},
                         allow_redirects=False, timeout=10)
    assert form.status_code == 404


def test_a_quiet_live_stream_outlives_the_http_idle_timeout(start_gateway):
    gw = start_gateway("[connections]\nhttp_idle_timeout = 2\n")
    session = requests.get(gw.address + "/api/v1/options", auth=("alice", ""), timeout=10).cookies["dask-gateway"]
    started = time.monotonic()
    comments = 0
    with requests.get(gw.address + "/api/v1/events", cookies={"dask-gateway": session},
                      stream=True, timeout=(5, 5)) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines) == "event: clusters"
        # Three times the idle timeout with no change: keep-alive comments only.
        while time.monotonic() - started < 6:
            line = next(lines)
            comments += line.startswith(":")
    assert comments >= 3, comments


def test_a_stopping_gateway_ends_live_streams_instead_of_waiting_for_them(start_gateway):
    gw = start_gateway()
    session = requests.get(gw.address + "/api/v1/options", auth=("alice", ""), timeout=10).cookies["dask-gateway"]
    with requests.get(gw.address + "/api/v1/events", cookies={"dask-gateway": session},
                      stream=True, timeout=(5, 30)) as stream:
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines) == "event: clusters"
        gw.proc.terminate()
        rest = list(lines)  # the stream ends: the gateway closed it
        assert not any(line.startswith("event:") for line in rest), rest
    assert gw.proc.wait(30) == 0
    log = gw.log_path.read_text()
    assert "still busy at shutdown" not in log, log[-2000:]
