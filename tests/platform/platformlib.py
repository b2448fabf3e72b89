"""Helpers of the platform test (tests/platform): reaching the deployment,
the CRDs and other operators on the shared tier, clean-up."""

import json
import subprocess
import time
import urllib.error
import urllib.request

import yaml
from e2e.conftest import ROOT, image_ref
from testlib import poll

import deploy

RELEASE = "dask"
CLUSTER_NAMESPACE = "jhub-dask"
GATEWAY = f"{RELEASE}-dask-rs-gateway"
OPERATOR = f"{RELEASE}-dask-rs-operator"
CRD = "daskclusters.kubernetes.dask.org"
# The e2e suite's release: the CRDs belong to it (Helm adopts them only into the release that made them).
E2E_RELEASE, E2E_NAMESPACE = "dr", "dask-system"


def http(method, url, token=None, body=None, scheme="token", timeout=30):
    """(status, parsed JSON or text) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"{scheme} {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode(errors="replace")


def answers(url):
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def image(var):
    repo, tag = image_ref(var)
    return f"{repo}:{tag}"


def other_operators(kubectl):
    """dask-rs operators of other releases: they would reconcile this test's DaskClusters too."""
    pods = kubectl.json("get", "pods", "-A", "-l", "app.kubernetes.io/name=dask-rs,app.kubernetes.io/component=operator")
    return sorted({f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods["items"]
                   if p["metadata"]["namespace"] != deploy.NAMESPACE})


def ensure_crds(kubectl):
    """The CRDs, made as the e2e suite's release `dr` makes them if the tier
    has none (so that suite still adopts them), and left as they are if it has."""
    if kubectl.run("get", "crd", CRD, check=False).returncode == 0:
        return "present"
    rendered = subprocess.run(["helm", "template", E2E_RELEASE, str(ROOT / "charts" / "dask-rs"), "-n", E2E_NAMESPACE,
                               "--show-only", "templates/crds.yaml"], capture_output=True, text=True, check=True).stdout
    kubectl("apply", "--server-side", "-f", "-", input=rendered)
    for crd in [d["metadata"]["name"] for d in yaml.safe_load_all(rendered) if d]:
        kubectl("annotate", "--overwrite", "crd", crd, f"meta.helm.sh/release-name={E2E_RELEASE}",
                f"meta.helm.sh/release-namespace={E2E_NAMESPACE}")
        kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm")
    return "created"


class Platform:
    """What the tests need to reach the deployment."""

    def __init__(self, kubectl, values, tokens, timings):
        self.kubectl = kubectl
        self.values = values
        self.admin_token = tokens[f"hub.services.{deploy.ADMIN_SERVICE}.apiToken"]
        self.timings = timings
        self.public_ip = kubectl.json("get", "service", "proxy-public", "-n", deploy.NAMESPACE)["spec"]["clusterIP"]
        self.public_url = f"http://{self.public_ip}"
        service = kubectl.json("get", "service", GATEWAY, "-n", deploy.NAMESPACE)
        self.gateway_ip = service["spec"]["clusterIP"]
        self.gateway_url = f"http://{self.gateway_ip}:80/services/dask-gateway"
        self.proxy_address = f"gateway://{self.gateway_ip}:80"

    def hub_api(self, method, path, token=None, body=None):
        """The Hub's REST API as an admin reaches it: through proxy-public."""
        return http(method, f"{self.public_url}/hub/api{path}", token or self.admin_token, body)

    def spawn(self, user):
        """Creates the Hub user and starts their server through the Hub's API
        (KubeSpawner makes the pod); returns the ready pod's name."""
        status, _ = self.hub_api("POST", f"/users/{user}")
        assert status in (201, 409), status
        started = time.monotonic()
        status, body = self.hub_api("POST", f"/users/{user}/server")
        assert status in (201, 202), (status, body)

        def ready():
            try:
                _, model = self.hub_api("GET", f"/users/{user}")
            except OSError:  # the proxy between two routes, a Hub restart
                return False
            server = model.get("servers", {}).get("", {})
            return server.get("ready") and server
        poll(ready, 300, f"{user}'s server to be ready", interval=2)
        self.timings[f"spawn {user}"] = time.monotonic() - started
        pods = self.kubectl.json("get", "pods", "-n", deploy.NAMESPACE, "-l",
                                 f"component=singleuser-server,hub.jupyter.org/username={user}")["items"]
        assert len(pods) == 1, pods
        return pods[0]["metadata"]["name"]

    def exec(self, pod, *command, input=None, timeout=60):
        """`kubectl exec` in a single-user pod: the process inherits the
        container's environment (the server's JUPYTERHUB_API_TOKEN included)."""
        proc = subprocess.run(["kubectl", "exec", "-i", "-n", deploy.NAMESPACE, pod, "-c", "notebook", "--", *command],
                              input=input or "", capture_output=True, text=True, timeout=timeout)
        return proc

    def env(self, pod):
        out = self.exec(pod, "env").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def describe(kubectl):
    """What the namespaces hold, for a failed deployment's message."""
    out = []
    for ns in (deploy.NAMESPACE, CLUSTER_NAMESPACE):
        out.append(kubectl.run("get", "pods,events", "-n", ns, "-o", "wide", check=False).stdout[-4000:])
    for deployment in ("hub", "proxy", GATEWAY, OPERATOR):
        out.append(f"--- logs {deployment}\n" + kubectl.run("logs", f"deployment/{deployment}", "-n", deploy.NAMESPACE,
                                                           "--tail=40", check=False).stdout)
    return "\n".join(out)




def teardown(kubectl):
    """Servers, clusters, the release and both namespaces."""
    kubectl.run("delete", "pods", "-n", deploy.NAMESPACE, "-l", "component=singleuser-server", "--wait=false",
                check=False)
    kubectl.run("delete", "daskclusters.kubernetes.dask.org", "--all", "-n", CLUSTER_NAMESPACE, "--timeout=120s",
                check=False)
    subprocess.run(["helm", "uninstall", RELEASE, "--namespace", deploy.NAMESPACE, "--wait", "--timeout", "120s"],
                   capture_output=True, timeout=180)
    for ns in (CLUSTER_NAMESPACE, deploy.NAMESPACE):
        kubectl.run("delete", "namespace", ns, "--timeout=120s", check=False)
