"""The Helm chart, checked with the real helm against the real API server:
lint, schema validation of values, server-side validation of every rendered
object, and an install whose RBAC grants exactly what each component needs."""

import base64
import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dask-rs"


def helm(*args, check=True):
    proc = subprocess.run(["helm", *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def render(*extra):
    out = helm("template", "t", str(CHART), "--namespace", "dask-system", *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_lint_is_clean():
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART)).stdout


def test_values_schema_rejects_bad_values():
    bad = helm("template", "t", str(CHART), "--set", "operator.replicas=many", check=False)
    assert bad.returncode != 0 and "replicas" in bad.stderr
    bad = helm("template", "t", str(CHART), "--set", "operator.logFormat=xml", check=False)
    assert bad.returncode != 0 and "logFormat" in bad.stderr
    bad = helm("template", "t", str(CHART), "--set", "operator.bogus=1", check=False)
    assert bad.returncode != 0 and "bogus" in bad.stderr
    bad = helm("template", "t", str(CHART), "--set", "gateway.auth.type=ldap", check=False)
    assert bad.returncode != 0 and "type" in bad.stderr
    bad = helm("template", "t", str(CHART), "--set", "gateway.profiles[0].workerCores=0", check=False)
    assert bad.returncode != 0 and "workerCores" in bad.stderr
    bad = helm("template", "t", str(CHART), "--set", "gateway.pool.size=17", check=False)
    assert bad.returncode != 0 and "size" in bad.stderr


def test_rendered_gateway_config_is_accepted_by_the_gateway(tmp_path):
    from gatewaylib import gateway_bin
    for extra in [(), ("--set", "gateway.limits.userMaxClusters=2", "--set", "gateway.auth.admins={alice,bob}",
                       "--set", "gateway.auth.type=basic", "--set", "gateway.auth.usersSecret=users"),
                  ("--set", "gateway.pool.size=2", "--set", "gateway.pool.profiles={small,medium}")]:
        config = next(d for d in render(*extra) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-gateway"))
        path = tmp_path / "gateway.toml"
        path.write_text(config["data"]["gateway.toml"])
        proc = subprocess.run([gateway_bin(), "--config", str(path), "check-config"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "config ok: 3 profile(s), kubernetes backend" in proc.stdout
    # The pool is off by default (its idle cost is scheduler pods), on when set.
    assert "pool_size = 0" in gateway_config(render())
    pooled = gateway_config(render("--set", "gateway.pool.size=2", "--set", "gateway.pool.profiles={small,medium}"))
    assert 'pool_size = 2\npool_profiles = ["small", "medium"]' in pooled, pooled


def gateway_config(docs):
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-gateway"))["data"]["gateway.toml"]


def check_config(tmp_path, text):
    from gatewaylib import gateway_bin
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return subprocess.run([gateway_bin(), "--config", str(path), "check-config"], capture_output=True, text=True)


def test_default_install_has_a_generated_password_not_open_simple_auth(tmp_path):
    docs = render()
    config = gateway_config(docs)
    assert 'password_file = "/etc/dask-gateway/password/password"' in config and "allow_insecure" not in config
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "t-dask-rs-gateway-password")
    import base64
    assert len(base64.b64decode(secret["data"]["password"])) == 32
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-dask-rs-gateway")
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["password"]["secret"]["secretName"] == "t-dask-rs-gateway-password"

    # The same config with no password on 0.0.0.0 is refused by the gateway itself.
    open_config = config.replace('password_file = "/etc/dask-gateway/password/password"', "")
    refused = check_config(tmp_path, open_config)
    assert refused.returncode != 0 and "auth.allow_insecure" in refused.stderr, refused.stderr
    # ...unless the values say so in so many words.
    insecure = gateway_config(render("--set", "gateway.auth.allowInsecure=true"))
    assert "allow_insecure = true" in insecure and "password_file" not in insecure
    assert check_config(tmp_path, insecure).returncode == 0
    def passwords(docs):
        return [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-password")]
    assert not passwords(render("--set", "gateway.auth.allowInsecure=true"))
    # A Secret of one's own replaces the generated one.
    own = render("--set", "gateway.auth.passwordSecret=mine")
    assert not passwords(own)
    gateway = next(d for d in own if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-dask-rs-gateway")
    assert {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}["password"]["secret"]["secretName"] == "mine"


def test_dask_pods_are_reachable_only_from_the_gateway_and_their_own_cluster():
    docs = render()
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "t-dask-rs-dask-clusters")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"gateway.dask.org/instance": "t-dask-rs-gateway"}}
    rule, operator = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dask-rs", "app.kubernetes.io/instance": "t",
                                                              "app.kubernetes.io/component": "gateway"}}}]
    assert sorted(p["port"] for p in rule["ports"]) == [8786, 8787, 8788]
    # The operator retires workers through the scheduler (HTTP API, else RPC):
    # without this rule a graceful scale-down waits out its timeout.
    assert operator["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dask-rs", "app.kubernetes.io/instance": "t",
                                                                  "app.kubernetes.io/component": "operator"}}}]
    assert sorted(p["port"] for p in operator["ports"]) == [8786, 8787]
    # The gateway adds each cluster's own policy (pods of one cluster reach each other).
    assert "network_policy = true" in gateway_config(docs)
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "t-dask-rs-gateway")
    assert {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create"]} in role["rules"]
    # With the Dask monitors on, their scrapes (the dashboard port) come in from
    # metricsFrom, the monitoring namespace by default.
    for monitor in (["metrics.scheduler.enabled=true", "metrics.scheduler.serviceMonitor.enabled=true"],
                    ["metrics.worker.enabled=true", "metrics.worker.podMonitor.enabled=true"]):
        scraped = render(*[a for setting in monitor for a in ("--set", setting)])
        policy = next(d for d in scraped if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "t-dask-rs-dask-clusters")
        _, _, scrapes = policy["spec"]["ingress"]
        assert scrapes == {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                           "ports": [{"port": 8787, "protocol": "TCP"}]}
    off = render("--set", "networkPolicy.enabled=false")
    assert "network_policy = false" in gateway_config(off)
    assert not [d for d in off if d["kind"] == "NetworkPolicy"]


def test_heartbeats_have_a_listener_and_an_internal_service_of_their_own():
    import tomllib
    docs = render()
    config = tomllib.loads(gateway_config(docs))
    assert config["connections"]["heartbeat_listen"] == "0.0.0.0:8001"
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-gateway-heartbeat"))
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["port"] == 8001
    assert config["backend"]["api_url"].startswith(f"http://{service['metadata']['name']}.")
    assert config["backend"]["api_url"].endswith(":8001/api")
    # Only the gateway's own Dask pods may send them.
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-gateway"))
    heartbeat_rule = next(r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": 8001, "protocol": "TCP"}])
    assert heartbeat_rule["from"][0]["podSelector"]["matchLabels"]["gateway.dask.org/instance"]


def test_crds_in_chart_match_generated_crds():
    generated = sorted((ROOT / "crds" / "yaml").glob("*.yaml"))
    assert generated, "crds/yaml holds no generated CRD"
    for path in generated:
        chart_copy = CHART / "files" / "crds" / path.name
        assert chart_copy.exists(), f"{chart_copy} missing: run the crdgen"
        assert chart_copy.read_text() == path.read_text(), f"{chart_copy.name} drifted from crds/yaml"


def test_rendered_crds_are_kept_on_uninstall():
    crds = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert {c["spec"]["names"]["kind"] for c in crds} == {"DaskCluster", "DaskWorkerGroup", "DaskAutoscaler", "DaskJob"}
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)


def test_every_rendered_object_passes_server_side_validation(kubectl):
    docs = render("--set", "metrics.serviceMonitor.enabled=false")
    manifest = yaml.safe_dump_all([d for d in docs if d["kind"] != "CustomResourceDefinition"])
    kubectl.run("create", "namespace", "dask-system", check=False)
    out = kubectl("apply", "--dry-run=server", "-n", "dask-system", "-f", "-", input=manifest)
    assert out.count("(server dry run)") == len(docs) - 4


@pytest.fixture
def release(kubectl):
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    name = "dr"
    # Server-side apply, as the other suites do: the CRDs stay shared.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds/yaml"))
    helm("install", name, str(CHART), "--namespace", ns, "--create-namespace",
         "--set", "operator.nodeSelector.type=kwok", "--set", "gateway.nodeSelector.type=kwok",
         # The CRDs are shared with the other suites on this control plane; the
         # end-to-end suite installs them through the chart on a fresh one.
         "--set", "crds.install=false",
         "--wait", "--timeout", "120s")
    yield name, ns
    helm("uninstall", name, "--namespace", ns, check=False)
    kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def can_i(kubectl, sa, ns, verb, resource, where=None):
    """`resource` may name a subresource: "pods --subresource=log"."""
    args = ["auth", "can-i", verb, *resource.split(), f"--as=system:serviceaccount:{ns}:{sa}"]
    args += ["-n", where] if where else ["-A"]
    return kubectl.run(*args, check=False).stdout.strip() == "yes"


def test_install_runs_and_grants_least_privilege(kubectl, release):
    name, ns = release
    deployments = kubectl.json("-n", ns, "get", "deployments")["items"]
    assert {d["metadata"]["name"] for d in deployments} == {f"{name}-dask-rs-operator", f"{name}-dask-rs-gateway"}
    replicas = {d["metadata"]["name"]: d["status"].get("readyReplicas") for d in deployments}
    assert replicas == {f"{name}-dask-rs-operator": 1, f"{name}-dask-rs-gateway": 2}

    operator = f"{name}-dask-rs-operator"
    assert can_i(kubectl, operator, ns, "create", "pods", "anywhere")
    assert can_i(kubectl, operator, ns, "patch", "daskclusters.kubernetes.dask.org/status", "anywhere")
    assert not can_i(kubectl, operator, ns, "get", "secrets", "anywhere")
    assert not can_i(kubectl, operator, ns, "delete", "nodes")
    assert can_i(kubectl, operator, ns, "update", "leases.coordination.k8s.io/" + operator, ns)
    assert not can_i(kubectl, operator, ns, "update", "leases.coordination.k8s.io/someone-else", ns)

    gateway = f"{name}-dask-rs-gateway"
    assert can_i(kubectl, gateway, ns, "create", "daskclusters.kubernetes.dask.org", ns)
    assert can_i(kubectl, gateway, ns, "patch", "daskclusters.kubernetes.dask.org/scale", ns)
    assert can_i(kubectl, gateway, ns, "create", "secrets", ns)
    assert not can_i(kubectl, gateway, ns, "get", "secrets", "anywhere")
    assert not can_i(kubectl, gateway, ns, "create", "pods", ns)
    # Its own namespace only: a FAILED cluster's record (a Secret) is deleted with it.
    assert can_i(kubectl, gateway, ns, "delete", "secrets", ns)
    assert not can_i(kubectl, gateway, ns, "delete", "secrets", "anywhere")
    assert can_i(kubectl, gateway, ns, "create", "leases.coordination.k8s.io", ns)
    assert can_i(kubectl, gateway, ns, "create", "networkpolicies.networking.k8s.io", ns)
    # Cluster logs: reading pods and their logs, nothing more, here only.
    assert can_i(kubectl, gateway, ns, "list", "pods", ns)
    assert can_i(kubectl, gateway, ns, "get", "pods --subresource=log", ns)
    assert not can_i(kubectl, gateway, ns, "list", "pods", "anywhere")
    assert not can_i(kubectl, gateway, ns, "create", "pods --subresource=exec", ns) and not can_i(kubectl, gateway, ns, "delete", "pods", ns)

    # The generated password survives an upgrade.
    password = kubectl.json("-n", ns, "get", "secret", f"{name}-dask-rs-gateway-password")["data"]["password"]
    helm("upgrade", name, str(CHART), "--namespace", ns, "--reuse-values")
    assert kubectl.json("-n", ns, "get", "secret", f"{name}-dask-rs-gateway-password")["data"]["password"] == password


def test_replicas_share_a_generated_cookie_key_and_a_disruption_budget():
    docs = render()
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-dask-rs-gateway")
    assert gateway["spec"]["replicas"] == 2
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "t-dask-rs-gateway-cookie")
    assert len(base64.b64decode(secret["data"]["secret"])) >= 32
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cookie-secret"]["secret"]["secretName"] == "t-dask-rs-gateway-cookie"
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "t-dask-rs-gateway")
    assert 'cookie_secret_file = "/etc/dask-gateway/cookie/secret"' in config["data"]["gateway.toml"]
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    # One replica: no budget (it would block every drain); a Secret of one's own: no generated key.
    assert not [d for d in render("--set", "gateway.replicas=1") if d["kind"] == "PodDisruptionBudget"]
    own = render("--set", "gateway.auth.cookieSecret=mine")
    assert not [d for d in own if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-cookie")]
    gateway = next(d for d in own if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-dask-rs-gateway")
    assert {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}["cookie-secret"]["secret"]["secretName"] == "mine"


def test_kube_version_admits_only_releases_with_the_prestop_sleep_action():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.30.0-0"
    deployments = [d for d in render() if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-dask-rs-gateway"]
    assert deployments[0]["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    refused = helm("template", "t", str(CHART), "--kube-version", "1.29.9", check=False)
    assert refused.returncode != 0 and "kubeVersion" in refused.stderr, refused.stderr


def test_limits_render_as_documented_and_null_lifts_them(tmp_path):
    import tomllib
    limits = tomllib.loads(gateway_config(render()))["limits"]
    assert limits == {"user_max_clusters": "unlimited", "user_max_cores": 64, "user_max_memory": "256 GiB",
                      "cluster_max_workers": 32}
    lifted = gateway_config(render(*[a for key in ("userMaxCores", "userMaxMemory", "clusterMaxWorkers")
                                     for a in ("--set", f"gateway.limits.{key}=null")],
                                   "--set", "gateway.limits.userMaxClusters=3"))
    assert tomllib.loads(lifted)["limits"] == {"user_max_clusters": 3, "user_max_cores": "unlimited",
                                               "user_max_memory": "unlimited", "cluster_max_workers": "unlimited"}
    proc = check_config(tmp_path, lifted)
    assert proc.returncode == 0, proc.stderr
    # 0 was dropped (Helm's `with` skips it); now the schema refuses it, naming the key.
    for key in ("userMaxClusters", "clusterMaxWorkers"):
        refused = helm("template", "t", str(CHART), "--set", f"gateway.limits.{key}=0", check=False)
        assert refused.returncode != 0 and key in refused.stderr, refused.stderr


def test_pod_labels_reach_the_pods_and_idle_client_timeout_is_an_option_target():
    docs = render("--set-string", "gateway.podLabels.hub\\.jupyter\\.org/network-access-hub=true",
                  "--set", "operator.podLabels.team=dask",
                  "--set", "gateway.options.fields[0].field=idle",
                  "--set", "gateway.options.fields[0].type=float",
                  "--set", "gateway.options.fields[0].default=600",
                  "--set", "gateway.options.fields[0].target=idle_client_timeout")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"}
    assert pods["t-dask-rs-gateway"]["hub.jupyter.org/network-access-hub"] == "true"
    assert pods["t-dask-rs-operator"]["team"] == "dask"
    # The selector's labels stay: the Deployment still owns its pods.
    assert pods["t-dask-rs-gateway"]["app.kubernetes.io/component"] == "gateway"
    assert 'target = "idle_client_timeout"' in gateway_config(docs)


def test_the_gateway_has_a_service_monitor_beside_the_operators():
    docs = render("--set", "metrics.serviceMonitor.enabled=true")
    monitors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "ServiceMonitor"}
    assert monitors["t-dask-rs-gateway"]["endpoints"][0] | {"interval": None} == {"port": "http", "path": "/metrics",
                                                                                  "interval": None}
    assert monitors["t-dask-rs-gateway"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert monitors["t-dask-rs-operator"]["endpoints"][0]["port"] == "http-metrics"


def test_clusters_in_a_namespace_of_their_own_render_every_rule_across_namespaces():
    docs = render("--set", "gateway.clusterNamespace.name=dask-users")
    namespace = [d for d in docs if d["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in namespace] == ["dask-users"]
    assert namespace[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    gateway_role = [d for d in docs if d["kind"] in ("Role", "RoleBinding") and d["metadata"]["name"] == "t-dask-rs-gateway"]
    assert {d["metadata"]["namespace"] for d in gateway_role} == {"dask-users"}
    assert 'namespace = "dask-users"' in gateway_config(docs)
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    clusters = policies["t-dask-rs-dask-clusters"]
    assert clusters["metadata"]["namespace"] == "dask-users"
    release_ns = {"matchLabels": {"kubernetes.io/metadata.name": "dask-system"}}
    assert all(rule["from"][0]["namespaceSelector"] == release_ns for rule in clusters["spec"]["ingress"])
    heartbeats = policies["t-dask-rs-gateway"]["spec"]["ingress"][1]["from"][0]
    assert heartbeats["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "dask-users"}}
    refused = helm("template", "t", str(CHART), "--set", "gateway.clusterNamespace.name=dask-users",
                   "--set", "rbac.cluster=false", check=False)
    assert refused.returncode != 0 and "gateway.clusterNamespace.name" in refused.stderr
    bad = helm("template", "t", str(CHART), "--set", "gateway.clusterNamespace.name=Not_A_Name", check=False)
    assert bad.returncode != 0 and "clusterNamespace" in bad.stderr


def test_beside_a_hub_the_gateway_cannot_read_the_hubs_secret(kubectl):
    """JupyterHub keeps its services' tokens in the Secret `hub` of its
    namespace. With the gateway's clusters in a namespace of their own, the
    gateway's account can read no Secret where the Hub lives, and does its
    work in the clusters' namespace."""
    ns = f"hub-{uuid.uuid4().hex[:6]}"
    clusters = f"{ns}-dask"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds/yaml"))
    kubectl("create", "namespace", ns)
    try:
        kubectl("-n", ns, "create", "secret", "generic", "hub", "--from-literal=hub.services.dask-gateway.apiToken=x")
        helm("install", "dr", str(CHART), "--namespace", ns, "--set", "crds.install=false",
             "--set", "operator.enabled=false", "--set", "gateway.nodeSelector.type=kwok",
             "--set", f"gateway.clusterNamespace.name={clusters}", "--set", "gateway.auth.type=jupyterhub",
             "--set", "gateway.auth.jupyterhubApiUrl=http://hub:8081/hub/api",
             "--set", "gateway.auth.jupyterhub.apiTokenSecret=hub",
             "--set", "gateway.auth.jupyterhub.apiTokenSecretKey=hub\\.services\\.dask-gateway\\.apiToken",
             "--wait", "--timeout", "120s")
        gateway = "dr-dask-rs-gateway"
        assert not can_i(kubectl, gateway, ns, "get", "secrets/hub", ns)
        assert not can_i(kubectl, gateway, ns, "list", "secrets", ns)
        assert not can_i(kubectl, gateway, ns, "create", "daskclusters.kubernetes.dask.org", ns)
        assert can_i(kubectl, gateway, ns, "create", "daskclusters.kubernetes.dask.org", clusters)
        assert can_i(kubectl, gateway, ns, "list", "secrets", clusters)
        assert can_i(kubectl, gateway, ns, "create", "leases.coordination.k8s.io", clusters)
    finally:
        helm("uninstall", "dr", "--namespace", ns, check=False)
        kubectl.run("delete", "namespace", ns, clusters, "--wait=false", check=False)


def test_lifetimes_and_timeouts_render_per_profile_and_the_gateway_accepts_them(tmp_path):
    import tomllib
    config = gateway_config(render("--set", "gateway.cluster.maxLifetime=86400",
                                   "--set", "gateway.profiles[0].name=short", "--set", "gateway.profiles[0].workerCores=1",
                                   "--set", "gateway.profiles[0].workerMemory=1 GiB",
                                   "--set", "gateway.profiles[0].maxLifetime=3600",
                                   "--set", "gateway.profiles[0].idleClientTimeout=600"))
    parsed = tomllib.loads(config)
    assert parsed["cluster"]["max_lifetime"] == 86400
    assert {k: parsed["options"]["profiles"][0][k] for k in ("max_lifetime", "idle_client_timeout")} == \
        {"max_lifetime": 3600, "idle_client_timeout": 600}
    proc = check_config(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    refused = helm("template", "t", str(CHART), "--set", "gateway.cluster.maxLifetime=-1", check=False)
    assert refused.returncode != 0 and "maxLifetime" in refused.stderr
