"""The chart's recipe for a JupyterHub: the DASK_GATEWAY__* environment and
gateway.yaml it renders for notebooks, the gateway's Hub service token, and
the example values for zero-to-jupyterhub / daskhub, which must agree with
what the chart renders. The real dask-gateway client reads the rendered
environment and file."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_chart import CHART, check_config, gateway_config, helm, render

EXAMPLES = CHART / "examples" / "jupyterhub"
HUB = ["--set", "gateway.auth.type=jupyterhub", "--set", "gateway.auth.jupyterhubApiUrl=http://hub:8081/hub/api"]


def render_as(release, namespace, *extra):
    out = helm("template", release, str(CHART), "--namespace", namespace, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {[d['metadata']['name'] for d in docs if d['kind'] == kind]}"
    return found[0]


def gateway_env(docs, name="t-dask-rs-gateway"):
    container = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def client_view(env=None, dask_config_dir=None):
    """What the real dask-gateway client makes of an environment: its dask
    config and the addresses of `Gateway()` with no arguments."""
    script = (
        "import json, dask, dask_gateway\n"
        "g = dask_gateway.Gateway()\n"
        "print(json.dumps({'config': dask.config.get('gateway'), 'address': g.address,\n"
        "  'proxy_address': g.proxy_address, 'public_address': g._public_address,\n"
        "  'auth': type(g.auth).__name__, 'options': dask.config.get('gateway.cluster.options')}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "JUPYTERHUB_"))}
    clean.update(env or {}, JUPYTERHUB_API_TOKEN="t0ken")
    clean["DASK_CONFIG"] = str(dask_config_dir or "/nonexistent")
    proc = subprocess.run([sys.executable, "-c", script], env=clean, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_client_environment_and_gateway_yaml_give_the_client_its_addresses(tmp_path):
    docs = render_as("dask", "jhub", *HUB, "--set", "gateway.prefix=/services/dask-gateway",
                     "--set", "gateway.client.publicAddress=/services/dask-gateway",
                     "--set", "gateway.client.clusterOptions.profile=small")
    env = find(docs, "ConfigMap", "dask-dask-rs-gateway-client")["data"]
    service = "dask-dask-rs-gateway.jhub.svc.cluster.local:80"
    assert env == {
        "DASK_GATEWAY__ADDRESS": f"http://{service}/services/dask-gateway",
        # One port for everything: the proxy address is the same Service port.
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{service}",
        "DASK_GATEWAY__PUBLIC_ADDRESS": "/services/dask-gateway",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        "DASK_GATEWAY__CLUSTER__OPTIONS__PROFILE": "small",
    }
    svc = find(docs, "Service", "dask-dask-rs-gateway")
    assert svc["spec"]["ports"][0]["port"] == 80

    from_env = client_view(env)
    assert from_env["address"] == f"http://{service}/services/dask-gateway"
    assert from_env["proxy_address"] == f"gateway://{service}"
    assert from_env["public_address"] == "/services/dask-gateway"
    assert from_env["auth"] == "JupyterHubAuth" and from_env["options"] == {"profile": "small"}

    # The same client view from the rendered gateway.yaml alone.
    config = find(docs, "ConfigMap", "dask-dask-rs-gateway-client-config")["data"]
    (tmp_path / "gateway.yaml").write_text(config["gateway.yaml"])
    from_file = client_view(dask_config_dir=tmp_path)
    assert {k: from_file[k] for k in ("address", "proxy_address", "public_address", "auth", "options")} == \
           {k: from_env[k] for k in ("address", "proxy_address", "public_address", "auth", "options")}

    # Without a Hub: no auth type (the notebook passes its own), addresses default to the Service.
    plain = find(render_as("dask", "jhub"), "ConfigMap", "dask-dask-rs-gateway-client")["data"]
    assert plain == {"DASK_GATEWAY__ADDRESS": f"http://{service}", "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{service}",
                     "DASK_GATEWAY__PUBLIC_ADDRESS": f"http://{service}"}


def test_address_and_port_overrides_reach_the_client_environment():
    docs = render_as("r", "ns", "--set", "gateway.service.port=8080", "--set", "gateway.clusterDomain=example.internal",
                     "--set", "gateway.client.address=https://dask.example.org/gw")
    env = find(docs, "ConfigMap", "r-dask-rs-gateway-client")["data"]
    assert env["DASK_GATEWAY__ADDRESS"] == "https://dask.example.org/gw"
    assert env["DASK_GATEWAY__PUBLIC_ADDRESS"] == "https://dask.example.org/gw"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://r-dask-rs-gateway.ns.svc.example.internal:8080"
    bad = helm("template", "t", str(CHART), "--set", "gateway.client.address=dask.example.org", check=False)
    assert bad.returncode != 0 and "address" in bad.stderr
    bad = helm("template", "t", str(CHART), "--set", "gateway.auth.jupyterhub.serviceName=a b", check=False)
    assert bad.returncode != 0 and "serviceName" in bad.stderr
    # Upper case would not survive the environment (dask lower-cases variable names).
    bad = helm("template", "t", str(CHART), "--set", "gateway.client.clusterOptions.Profile=small", check=False)
    assert bad.returncode != 0 and "Profile" in bad.stderr


def test_hub_token_is_generated_into_a_secret_the_gateway_reads(tmp_path):
    docs = render(*HUB)
    secret = find(docs, "Secret", "t-dask-rs-gateway-hub-token")
    assert len(base64.b64decode(secret["data"]["token"])) == 48
    token = gateway_env(docs)["JUPYTERHUB_API_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "t-dask-rs-gateway-hub-token", "key": "token"}
    # The gateway's defaults for jupyterhub_api_token and jupyterhub_service_name.
    assert gateway_env(docs)["JUPYTERHUB_SERVICE_NAME"]["value"] == "dask-gateway"
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-gateway-password")]
    proc = check_config(tmp_path, gateway_config(docs))
    assert proc.returncode == 0, proc.stderr

    # An existing Secret (z2jh's "hub") is used as it is, and nothing is generated.
    docs = render(*HUB, "--set", "gateway.auth.jupyterhub.apiTokenSecret=hub",
                  "--set", "gateway.auth.jupyterhub.apiTokenSecretKey=hub.services.dask-gateway.apiToken")
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-hub-token")]
    ref = gateway_env(docs)["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hub", "key": "hub.services.dask-gateway.apiToken"}

    # Other auth types get no Hub token at all.
    docs = render()
    assert not {"JUPYTERHUB_API_TOKEN", "JUPYTERHUB_SERVICE_NAME"} & set(gateway_env(docs))
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-hub-token")]


@pytest.fixture(scope="module")
def examples():
    dask_rs = yaml.safe_load((EXAMPLES / "dask-rs-values.yaml").read_text())
    z2jh = yaml.safe_load((EXAMPLES / "z2jh-values.yaml").read_text())
    docs = render_as("dask", "jhub", "-f", str(EXAMPLES / "dask-rs-values.yaml"))
    return dask_rs, z2jh, docs


def test_example_values_agree_with_what_the_chart_renders(examples, tmp_path):
    dask_rs, z2jh, docs = examples
    hub_auth = dask_rs["gateway"]["auth"]
    service_name = hub_auth["jupyterhub"]["serviceName"]

    # The Hub's service is the gateway's, and its token is the Secret the gateway reads.
    assert list(z2jh["hub"]["services"]) == [service_name]
    env = gateway_env(docs, "dask-dask-rs-gateway")
    assert env["JUPYTERHUB_SERVICE_NAME"]["value"] == service_name
    ref = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    # z2jh keeps hub.services.<name>.apiToken in its Secret "hub" under that very key.
    assert ref == {"name": "hub", "key": f"hub.services.{service_name}.apiToken"}
    assert f"access:services!service={service_name}" in z2jh["hub"]["loadRoles"]["user"]["scopes"]

    # The Hub's proxy route reaches the gateway's Service, which serves under the service's prefix.
    svc = find(docs, "Service", "dask-dask-rs-gateway")
    assert z2jh["hub"]["services"][service_name]["url"] == \
        f"http://{svc['metadata']['name']}.jhub.svc.cluster.local:{svc['spec']['ports'][0]['port']}"
    config = gateway_config(docs)
    assert f'prefix = "/services/{service_name}"' in config and 'type = "jupyterhub"' in config
    assert f'jupyterhub_api_url = "{hub_auth["jupyterhubApiUrl"]}"' in config
    proc = check_config(tmp_path, config)
    assert proc.returncode == 0, proc.stderr

    # z2jh's NetworkPolicies: the Hub admits the gateway's pods by their label,
    # and the notebooks' egress rule selects the gateway's pods and port.
    gateway = find(docs, "Deployment", "dask-dask-rs-gateway")["spec"]["template"]
    assert gateway["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    [egress] = z2jh["singleuser"]["networkPolicy"]["egress"]
    selector = egress["to"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= gateway["metadata"]["labels"].items()
    container_ports = {p["containerPort"] for p in gateway["spec"]["containers"][0]["ports"] if p["name"] == "http"}
    assert {p["port"] for p in egress["ports"]} == container_ports
    # The gateway's rights are in the clusters' namespace, not the Hub's.
    role = find(docs, "Role", "dask-dask-rs-gateway")
    assert role["metadata"]["namespace"] == dask_rs["gateway"]["clusterNamespace"]["name"] != "jhub"

    # singleuser.extraEnv is the chart's client environment, and extraFiles its cluster options.
    env = find(docs, "ConfigMap", "dask-dask-rs-gateway-client")["data"]
    options_env = {k: v for k, v in env.items() if k.startswith("DASK_GATEWAY__CLUSTER__OPTIONS__")}
    assert z2jh["singleuser"]["extraEnv"] == {k: v for k, v in env.items() if k not in options_env}
    assert options_env == {"DASK_GATEWAY__CLUSTER__OPTIONS__PROFILE": "small"}
    extra = z2jh["singleuser"]["extraFiles"]["dask-gateway"]
    rendered = yaml.safe_load(find(docs, "ConfigMap", "dask-dask-rs-gateway-client-config")["data"]["gateway.yaml"])
    assert extra["data"]["gateway"]["cluster"] == rendered["gateway"]["cluster"]
    assert Path(extra["mountPath"]).name == "gateway.yaml" and Path(extra["mountPath"]).parent == Path("/etc/dask")
    assert rendered["gateway"]["cluster"]["options"]["profile"] in [p["name"] for p in dask_rs["gateway"]["profiles"]]

    # What a notebook of that Hub sees: extraEnv plus the mounted file.
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(extra["data"]))
    seen = client_view(z2jh["singleuser"]["extraEnv"], tmp_path)
    assert seen["auth"] == "JupyterHubAuth" and seen["options"] == {"profile": "small"}
    assert seen["proxy_address"] == "gateway://dask-dask-rs-gateway.jhub.svc.cluster.local:80"


def test_clusters_can_stop_with_their_owners_server_after_a_grace(tmp_path):
    docs = render(*HUB, "--set", "gateway.auth.jupyterhub.stopClustersWithServer=true",
                  "--set", "gateway.auth.jupyterhub.serverStopGrace=120")
    config = gateway_config(docs)
    assert "stop_clusters_with_server = true" in config and "server_stop_grace = 120" in config
    proc = check_config(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    assert "stop_clusters_with_server = false" in gateway_config(render(*HUB))
