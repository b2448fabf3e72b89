"""The platform as its users deploy it, on real pods (opt-in: tests/platform/run;
docs/platform-test.md):

- a JupyterHub in the cluster as zero-to-jupyterhub deploys it (Hub and
  proxy Deployments, `hub` and `proxy-public` Services, KubeSpawner, z2jh's
  NetworkPolicies), configured from charts/dask-rs/examples/jupyterhub/z2jh-values.yaml;
- the dask-rs chart as release "dask" with .../dask-rs-values.yaml
  (clusters in "jhub-dask", the gateway as the Hub's service);
- real single-user servers that the Hub spawns (KubeSpawner) for alice and
  bob, through the Hub's REST API;
- in alice's server, with the server's own token and the recipe's
  environment, the seed notebook (tests/hub_notebook.py);
- the NetworkPolicies enforced: what they forbid fails, what the platform
  needs works, scale-down retirement through the scheduler included;
- bob can neither list, open, stop nor connect to alice's cluster;
- alice's dashboard in headless Chromium through the Hub's login and OAuth,
  and not for bob.

Stand-ins (see deploy.py): the Hub/proxy image and jupyterhub_config.py are
z2jh's reduced to this recipe, built here from PyPI and npm; z2jh's
templates are rendered by deploy.py; the Hub's database is an emptyDir; the
CRDs are made as the e2e suite's release makes them (crds.install=false for
release "dask"), since the tier is shared with that suite."""

import datetime
import json
import socket
import ssl
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from platformlib import CLUSTER_NAMESPACE, GATEWAY, OPERATOR, ROOT, http
from e2e.test_network_policy import agent_running, drops
from testlib import poll

import deploy
from hub_notebook import daily_temperatures, seed_cells

# Every test is bounded (its own mark may say more); the session's deployment
# is made in the first test's setup.
pytestmark = pytest.mark.timeout(900)
ARTIFACTS = ROOT / "tests" / "artifacts"
USERS = ("alice", "bob")
PREFIX = "/services/dask-gateway"
PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def attempt(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=4).close()
        return "connected"
    except OSError as e:
        return f"{type(e).__name__}: {e}"

targets = json.loads(sys.argv[1])
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(attempt, targets)))))
"""


@pytest.fixture(scope="module")
def servers(platform):
    """alice's and bob's servers, spawned by the Hub; {user: pod name}."""
    return {user: platform.spawn(user) for user in USERS}


def server_token(platform, pod):
    return platform.env(pod)["JUPYTERHUB_API_TOKEN"]


def test_the_hub_spawns_each_users_server_with_the_recipe(platform, servers):
    extra_env = platform.values["singleuser"]["extraEnv"]
    for user, pod_name in servers.items():
        pod = platform.kubectl.json("get", "pod", pod_name, "-n", deploy.NAMESPACE)
        container = pod["spec"]["containers"][0]
        assert container["image"].startswith("dask-rs.local/notebook:")
        assert pod["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
        # KubeSpawner put singleuser.extraEnv into the pod, and the process sees it.
        env = platform.env(pod_name)
        assert {k: env.get(k) for k in extra_env} == extra_env
        # The token is the server's own (JupyterHub made it for this server), resolving to the user.
        status, me = platform.hub_api("GET", "/user", token=env["JUPYTERHUB_API_TOKEN"])
        assert status == 200 and me["kind"] == "user" and me["name"] == user, me
        print(f"\n{user}'s server token scopes: {sorted(me['scopes'])}")
        # singleuser.extraFiles: the gateway's dask config at /etc/dask/gateway.yaml.
        mounted = platform.exec(pod_name, "cat", "/etc/dask/gateway.yaml")
        assert mounted.returncode == 0, mounted.stderr
        assert yaml.safe_load(mounted.stdout) == platform.values["singleuser"]["extraFiles"]["dask-gateway"]["data"]


@pytest.mark.timeout(900)
def test_the_seed_notebook_runs_in_alices_server(platform, servers):
    pod = servers["alice"]
    script = (ROOT / "tests" / "hub_notebook.py").read_text()
    assert platform.exec(pod, "sh", "-c", "cat > /tmp/hub_notebook.py", input=script).returncode == 0
    started = time.monotonic()
    proc = platform.exec(pod, "python", "/tmp/hub_notebook.py", timeout=600)
    platform.timings["notebook"] = time.monotonic() - started
    assert proc.returncode == 0, f"the notebook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    platform.timings["notebook: Gateway() to two workers"] = report["seconds_to_two_workers"]

    env = platform.values["singleuser"]["extraEnv"]
    assert report["address"] == env["DASK_GATEWAY__ADDRESS"]
    assert report["proxy_address"] == env["DASK_GATEWAY__PROXY_ADDRESS"]
    assert report["default_profile"] == "small" and report["profiles"] == ["small", "medium", "larger"]
    cluster = report["cluster"]
    assert len(set(report["workers"])) == 2 and all(w.startswith(f"dask-{cluster}") for w in report["workers"]), report
    # DASK_GATEWAY__PUBLIC_ADDRESS is relative: the link is the browser's (test_the_dashboard_...).
    assert report["dashboard_link"].startswith(f"{PREFIX}/clusters/{cluster}/") and report["dashboard"] is None
    yearly, warm, point = seed_cells(daily_temperatures())
    assert report["yearly"] == pytest.approx(yearly.values.tolist())
    assert report["warm"] == pytest.approx(warm.values.tolist())
    assert report["point"] == pytest.approx(point.values.tolist()) and report["point_at"] == [15.0, 50.0]
    assert report["clusters_after_shutdown"] == []
    poll(lambda: not platform.kubectl.json("get", "pods", "-n", CLUSTER_NAMESPACE, "-l",
                                           f"dask.org/cluster-name=dask-{cluster}")["items"],
         180, "the notebook's cluster's pods to go")


@pytest.fixture(scope="module")
def alice(platform, servers):
    """A cluster of alice's with two workers, made with her server's token
    (the dask-gateway client here, in the tier's network namespace, with the
    recipe's public address: dashboard links are relative to the Hub, as in
    the notebook)."""
    from dask_gateway import Gateway, JupyterHubAuth

    token = server_token(platform, servers["alice"])
    public = platform.values["singleuser"]["extraEnv"]["DASK_GATEWAY__PUBLIC_ADDRESS"]
    gateway = Gateway(platform.gateway_url, proxy_address=platform.proxy_address, public_address=public,
                      auth=JupyterHubAuth(token))
    started = time.monotonic()
    cluster = gateway.new_cluster(profile="small")
    cluster.scale(2)
    client = cluster.get_client()
    client.wait_for_workers(2, timeout=300)
    platform.timings["new_cluster to two workers (alice)"] = time.monotonic() - started
    yield SimpleNamespace(gateway=gateway, cluster=cluster, client=client, token=token, name=cluster.name)
    client.close()
    cluster.shutdown()
    gateway.close()


def cluster_pods(platform, name, component):
    return platform.kubectl.json("get", "pods", "-n", CLUSTER_NAMESPACE, "-l",
                                 f"dask.org/cluster-name=dask-{name},dask.org/component={component}")["items"]


def operator_log(platform, since):
    """The operator's JSON log lines since `since` (RFC 3339)."""
    out = platform.kubectl.run("logs", f"deployment/{OPERATOR}", "-n", deploy.NAMESPACE, f"--since-time={since}",
                               check=False).stdout
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    return lines


def message(line):
    return line.get("fields", {}).get("message") or line.get("message", "")


def rfc3339_now():
    return (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def retirement_failures(platform, name, since):
    """The operator's fallbacks (deleting without retirement) since `since`, in its log and events."""
    lines = [line for line in operator_log(platform, since) if "could not retire" in message(line)]
    events = platform.kubectl.json("get", "events", "-n", CLUSTER_NAMESPACE)["items"]
    return lines + [e["message"] for e in events
                    if e["reason"] == "RetireFailed" and e["involvedObject"]["name"].startswith(f"dask-{name}")]


@pytest.mark.timeout(600)
def test_scale_down_retires_the_worker_through_the_scheduler(platform, alice):
    """Both ways a gateway cluster scales down. The operator's: the
    DaskCluster's scale subresource lowered (kubectl scale, an HPA,
    dask-kubernetes' KubeCluster), the operator retires the surplus worker
    through the scheduler's HTTP API (the chart's operator -> scheduler
    rule) before deleting its pod. The gateway's: cluster.scale(1), the
    scheduler retires a worker itself and the gateway lowers the count."""
    kubectl, name = platform.kubectl, alice.name
    scheduler = cluster_pods(platform, name, "scheduler")[0]["metadata"]["name"]
    assert len(cluster_pods(platform, name, "worker")) == 2

    first = since = rfc3339_now()
    retired = None
    # The gateway's heartbeat (every 5 s) puts back the scheduler's count; if
    # it lands within the operator's debounce (0.5 s) the operator has
    # nothing to do, so the scale-down is tried again (a few times at most).
    for attempt in range(1, 6):
        since, started = rfc3339_now(), time.monotonic()
        kubectl("scale", "daskcluster", f"dask-{name}", "-n", CLUSTER_NAMESPACE, "--replicas=1")
        try:
            retired = poll(lambda: [line for line in operator_log(platform, since)
                                    if message(line) == "retired workers through the scheduler"], 15,
                           "the operator's retirement log line")
            break
        except AssertionError:
            poll(lambda: len(alice.client.scheduler_info()["workers"]) == 2, 180, "two workers again", interval=1)
    assert retired, f"the operator never retired a worker in {attempt} scale-downs:\n{operator_log(platform, first)}"
    platform.timings[f"operator retirement (scale subresource 2 -> 1 to retired; attempt {attempt})"] = \
        time.monotonic() - started
    assert retired[0]["fields"]["retired"] == 1, retired
    log = kubectl("logs", scheduler, "-n", CLUSTER_NAMESPACE)
    assert "Retire worker" in log, log[-3000:]
    # The gateway puts back the scheduler's count (its heartbeat): two workers again.
    poll(lambda: len(alice.client.scheduler_info()["workers"]) == 2, 180, "the gateway's count restored", interval=1)

    started = time.monotonic()
    alice.cluster.scale(1)
    poll(lambda: len(alice.client.scheduler_info()["workers"]) == 1, 120, "one worker left", interval=0.5)
    poll(lambda: len([p for p in cluster_pods(platform, name, "worker")
                      if not p["metadata"].get("deletionTimestamp")]) == 1, 120, "one worker pod left")
    platform.timings["gateway scale 2 -> 1"] = time.monotonic() - started
    # No fallback after a timeout, on either path.
    assert not retirement_failures(platform, name, first)


@pytest.fixture(scope="module")
def probes(platform, servers):
    """Two pods from the notebook image in the Hub's namespace, which no z2jh
    policy selects: one unlabelled, one with the label z2jh's hub policy admits."""
    nb_image = platform.kubectl.json("get", "pod", servers["alice"], "-n", deploy.NAMESPACE)["spec"]["containers"][0]["image"]
    pods = {"probe-plain": {}, "probe-hub-access": {"hub.jupyter.org/network-access-hub": "true"}}
    for name, labels in pods.items():
        platform.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": deploy.NAMESPACE, "labels": labels},
            "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "notebook", "image": nb_image, "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}))
    for name in pods:
        platform.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", deploy.NAMESPACE, "--timeout=120s")
    yield list(pods)
    platform.kubectl.run("delete", "pod", *pods, "-n", deploy.NAMESPACE, "--wait=false", check=False)


def connect(platform, pod, targets):
    """{target: "connected" or the error} of TCP connections from a pod (side by side, 4 s each)."""
    proc = platform.exec(pod, "python", "-c", PROBE, json.dumps(targets), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.timeout(300)
def test_the_network_policies_forbid_what_they_should_and_allow_what_the_platform_needs(platform, servers, alice,
                                                                                        probes):
    if not agent_running():
        pytest.fail("no NetworkPolicy agent runs in the pods tier (tests/k8s/cluster starts kube-network-policies)")
    k = platform.kubectl

    def ip(kind, name, ns=deploy.NAMESPACE):
        obj = k.json("get", kind, name, "-n", ns)
        return obj["spec"]["clusterIP"] if kind == "service" else obj["status"]["podIP"]

    hub_svc, hub_pod = ip("service", "hub"), k.json("get", "pods", "-n", deploy.NAMESPACE, "-l", "component=hub")["items"][0]["status"]["podIP"]
    proxy_pod = k.json("get", "pods", "-n", deploy.NAMESPACE, "-l", "component=proxy")["items"][0]["status"]["podIP"]
    scheduler = cluster_pods(platform, alice.name, "scheduler")[0]
    sched_pod = scheduler["status"]["podIP"]
    sched_svc = ip("service", f"dask-{alice.name}-scheduler", CLUSTER_NAMESPACE)
    worker_pod = cluster_pods(platform, alice.name, "worker")[0]["status"]["podIP"]
    operator_pod = k.json("get", "pods", "-n", deploy.NAMESPACE, "-l",
                          "app.kubernetes.io/component=operator")["items"][0]["status"]["podIP"]
    bob_pod = ip("pod", servers["bob"])
    alice_pod = servers["alice"]

    allowed = {
        # z2jh's hub policy admits the labelled pod (the gateway has the label too).
        ("probe-hub-access", f"{hub_svc}:8081"),
        # singleuser egress: the Hub, the proxy, and the recipe's rule to the gateway.
        (alice_pod, f"{hub_svc}:8081"),
        (alice_pod, f"{proxy_pod}:8000"),
        (alice_pod, f"{platform.gateway_ip}:80"),
        # Controls of the forbidden ones below: the probe reaches the proxy's
        # public port, and the operator's metrics port (its policy admits anyone).
        ("probe-plain", f"{proxy_pod}:8000"),
        ("probe-plain", f"{operator_pod}:8080"),
    }
    forbidden = {
        # z2jh's hub policy: only labelled pods reach 8081.
        ("probe-plain", f"{hub_svc}:8081"), ("probe-plain", f"{hub_pod}:8081"),
        # z2jh's proxy policy: the API port only from the Hub.
        ("probe-plain", f"{proxy_pod}:8001"),
        # z2jh's singleuser policy: a notebook only from the Hub and proxy.
        ("probe-plain", f"{bob_pod}:8888"), (alice_pod, f"{bob_pod}:8888"),
        # singleuser egress: no private address but the allowed ones; a
        # scheduler only through the gateway (the chart's policy forbids it too).
        (alice_pod, f"{sched_pod}:8786"), (alice_pod, f"{sched_svc}:8786"), (alice_pod, f"{sched_pod}:8787"),
        (alice_pod, f"{sched_pod}:8788"), (alice_pod, f"{worker_pod}:8787"), (alice_pod, f"{operator_pod}:8080"),
        # The chart's dask-clusters policy: a scheduler from the gateway and the operator only.
        ("probe-plain", f"{sched_pod}:8786"), ("probe-hub-access", f"{sched_pod}:8786"),
        ("probe-plain", f"{sched_pod}:8787"),
    }
    started, dropped = time.monotonic(), drops()
    results = {}
    for pod in {p for p, _ in allowed | forbidden}:
        targets = sorted(t for p, t in allowed | forbidden if p == pod)
        results.update({(pod, t): r for t, r in connect(platform, pod, targets).items()})
    platform.timings["connection checks"] = time.monotonic() - started
    table = "\n".join(f"  {'allowed  ' if key in allowed else 'forbidden'} {key[0]} -> {key[1]}: {results[key]}"
                      for key in sorted(results))
    print(f"\nconnections:\n{table}")
    wrong_allowed = [key for key in allowed if results[key] != "connected"]
    assert not wrong_allowed, f"needed connections failed:\n{table}"
    # A forbidden connection is dropped (the policy agent's verdict), so it
    # times out; refused would mean nothing listens there and prove nothing.
    connected = [key for key in forbidden if results[key] == "connected"]
    assert not connected, (f"connections the policies forbid succeeded (is a NetworkPolicy agent enforcing "
                           f"them on this tier?):\n{table}")
    not_dropped = [key for key in forbidden if not results[key].startswith("TimeoutError")]
    assert not not_dropped, f"forbidden connections that were not dropped by a policy:\n{table}"
    # The agent's own count: at least one dropped packet per forbidden connection.
    assert drops() - dropped >= len(forbidden)



def gateway_api(platform, method, path, token):
    return http(method, f"{platform.gateway_url}{path}", token, scheme="jupyterhub")


def tls_to_cluster(platform, name, cert=None, key=None):
    """Opens TLS to the gateway's port with the cluster's SNI, as the Dask
    client does; "accepted" if the scheduler keeps it open (or talks), else the refusal."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "c.pem").write_text(cert)
            (Path(d) / "k.pem").write_text(key)
            ctx.load_cert_chain(Path(d) / "c.pem", Path(d) / "k.pem")
    try:
        with socket.create_connection((platform.gateway_ip, 80), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=f"daskgateway-{name}") as tls:
                tls.settimeout(3)
                try:
                    data = tls.recv(1)
                except TimeoutError:
                    return "accepted"
                return "accepted" if data else "closed by the server"
    except (ssl.SSLError, OSError) as e:
        return f"refused: {e}"


@pytest.mark.timeout(300)
def test_another_user_cannot_list_open_stop_or_connect_to_alices_cluster(platform, servers, alice):
    from dask_gateway import Gateway, JupyterHubAuth

    bob_token = server_token(platform, servers["bob"])
    name = alice.name
    bob = Gateway(platform.gateway_url, proxy_address=platform.proxy_address, auth=JupyterHubAuth(bob_token))
    try:
        assert name not in [c.name for c in bob.list_clusters()]
        status, body = gateway_api(platform, "GET", "/api/v1/clusters/", bob_token)
        assert status == 200 and name not in body, body
        status, mine = gateway_api(platform, "GET", f"/api/v1/clusters/{name}", alice.token)
        assert status == 200 and mine["status"] == "RUNNING", mine
        status, body = gateway_api(platform, "GET", f"/api/v1/clusters/{name}", bob_token)
        assert status in (403, 404) and isinstance(body, dict), (status, body)
        with pytest.raises(Exception):
            bob.connect(name)
        status, body = gateway_api(platform, "DELETE", f"/api/v1/clusters/{name}", bob_token)
        assert status in (403, 404) and isinstance(body, dict), (status, body)
        assert gateway_api(platform, "GET", f"/api/v1/clusters/{name}", alice.token)[1]["status"] == "RUNNING"
        # The dashboard, by API credentials: alice's opens, bob's is refused.
        status, page = gateway_api(platform, "GET", f"/clusters/{name}/status", alice.token)
        assert status == 200 and "bokeh" in str(page).lower(), (status, str(page)[:300])
        status, body = gateway_api(platform, "GET", f"/clusters/{name}/status", bob_token)
        assert status == 403 and isinstance(body, dict), (status, body)
        # Scheduler TLS through the gateway's proxy: the cluster's own
        # certificate (alice's client has it) is accepted, none is refused,
        # and bob cannot get it.
        assert tls_to_cluster(platform, name, mine["tls_cert"], mine["tls_key"]) == "accepted"
        refused = tls_to_cluster(platform, name)
        assert refused != "accepted", refused
        print(f"\nTLS to {name} without its certificate: {refused}")
    finally:
        bob.close()


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    return driver


def wait(driver, condition, seconds, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.25).until(lambda d: condition(d), f"timed out: {what}")


def hub_login(driver, platform, user):
    """Signs in at the Hub's login page (dummy authenticator: any password)."""
    from selenium.webdriver.common.by import By

    driver.get(f"{platform.public_url}/hub/login?next=%2Fhub%2Fhome")
    try:
        wait(driver, lambda d: d.find_elements(By.ID, "username_input"), 30, "the Hub's login form")
    except Exception:
        shot(driver, f"{user}-login")
        raise AssertionError(f"no login form at {driver.current_url}: {driver.page_source[:2000]}")
    driver.find_element(By.ID, "username_input").send_keys(user)
    driver.find_element(By.ID, "password_input").send_keys("any password")
    driver.find_element(By.ID, "login_submit").click()
    wait(driver, lambda d: "/hub/home" in d.current_url, 30, f"{user} signed in")


def through_oauth(driver):
    """Follows the gateway's Hub OAuth, approving the Hub's "Authorize
    access" page as the user would (JupyterHub shows it for a service
    without oauth_no_confirm); returns whether it was shown."""
    from selenium.webdriver.common.by import By

    confirmed = []

    def settled(d):
        if "/hub/api/oauth2/authorize" in d.current_url:
            buttons = d.find_elements(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]")
            if buttons and not confirmed:
                confirmed.append(True)
                buttons[0].click()
            return False
        return "/oauth_callback" not in d.current_url and d.execute_script("return document.readyState") == "complete"
    wait(driver, settled, 60, "the OAuth round trip")
    return bool(confirmed)


def oauth_tokens(platform, user):
    """The user's tokens that the Hub issued to the gateway's OAuth client."""
    status, body = platform.hub_api("GET", f"/users/{user}/tokens")
    assert status == 200, body
    # (The server's own token's client is "JupyterHub".)
    return [t for t in body["api_tokens"] if "dask-gateway" in (t.get("oauth_client") or "")]


def rendered(driver, what):
    """The dashboard's Bokeh document arrived (over its websocket through the proxy and the gateway)."""
    wait(driver, lambda d: d.execute_script("return !!(window.Bokeh && Bokeh.documents && Bokeh.documents.length)"),
         60, what)
    time.sleep(2)  # the plots draw


def shot(driver, name):
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"platform-{name}.png"))


@pytest.mark.timeout(300)
def test_the_dashboard_opens_in_a_browser_for_its_owner_through_the_hub_and_not_for_another_user(platform, alice):
    link = alice.cluster.dashboard_link
    assert link.startswith(f"{PREFIX}/clusters/{alice.name}/"), link
    # Without the link's capability: the gateway's own session decides, made by the Hub's OAuth.
    plain = f"{platform.public_url}{PREFIX}/clusters/{alice.name}/status"
    started = time.monotonic()
    a = browser()
    try:
        hub_login(a, platform, "alice")
        # The link as JupyterLab shows it, relative to the Hub: its capability
        # opens it (no gateway session is made).
        a.get(platform.public_url + link)
        rendered(a, "alice's dashboard (the link)")
        shot(a, "alice-dashboard-link")
        # Without the capability: the gateway has no session for this
        # browser, sends it to the Hub's OAuth (alice is signed in there), and on.
        assert not oauth_tokens(platform, "alice")
        a.get(plain)
        print(f"\nthe Hub asked alice to authorize the gateway: {through_oauth(a)}")
        rendered(a, "alice's dashboard through OAuth")
        assert f"/clusters/{alice.name}/~" in a.current_url, a.current_url
        shot(a, "alice-dashboard-oauth")
        # The Hub issued the gateway an OAuth token for alice on the way.
        assert oauth_tokens(platform, "alice")
    finally:
        a.quit()
    b = browser()
    try:
        hub_login(b, platform, "bob")
        b.get(plain)
        through_oauth(b)
        wait(b, lambda d: "lacks permissions" in d.page_source, 30, "bob refused")
        assert "bokeh" not in b.page_source.lower()
        shot(b, "bob-refused")
        # Signed in through the same OAuth, and refused as bob.
        assert oauth_tokens(platform, "bob")
    finally:
        b.quit()
    platform.timings["browser checks"] = time.monotonic() - started


def test_kept_the_documented_values(platform):
    """The chart's values are the documented file's (images and crds.install aside)."""
    proc = platform.kubectl.run("get", "configmap", f"{GATEWAY}-client", "-n", deploy.NAMESPACE, "-o", "json")
    env = json.loads(proc.stdout)["data"]
    documented = platform.values["singleuser"]["extraEnv"]
    assert {k: env[k] for k in documented} == documented
