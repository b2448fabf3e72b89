"""The Helm chart, checked with the real helm against the real API server:
lint, schema validation of values, server-side validation of every rendered
object, and an install whose RBAC grants exactly what each component needs."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from testlib import poll

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


def test_rendered_gateway_config_is_accepted_by_the_gateway(tmp_path):
    from gatewaylib import gateway_bin
    for extra in [(), ("--set", "gateway.limits.userMaxClusters=2", "--set", "gateway.auth.admins={alice,bob}",
                       "--set", "gateway.auth.type=basic", "--set", "gateway.auth.usersSecret=users")]:
        config = next(d for d in render(*extra) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-gateway"))
        path = tmp_path / "gateway.toml"
        path.write_text(config["data"]["gateway.toml"])
        proc = subprocess.run([gateway_bin(), "--config", str(path), "check-config"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "config ok: 3 profile(s), kubernetes backend" in proc.stdout


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
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{ns}:{sa}"]
    args += ["-n", where] if where else ["-A"]
    return kubectl.run(*args, check=False).stdout.strip() == "yes"


def test_install_runs_and_grants_least_privilege(kubectl, release):
    name, ns = release
    deployments = kubectl.json("-n", ns, "get", "deployments")["items"]
    assert {d["metadata"]["name"] for d in deployments} == {f"{name}-dask-rs-operator", f"{name}-dask-rs-gateway"}
    assert all(d["status"].get("readyReplicas") == 1 for d in deployments)

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
    assert not can_i(kubectl, gateway, ns, "delete", "secrets", ns)


def monitors(*extra):
    return {d["kind"]: d for d in render(*extra) if d["kind"] in ("PodMonitor", "ServiceMonitor")
            and d["metadata"]["labels"].get("dask.org/component")}


def test_dask_cluster_monitors_are_off_by_default_and_follow_dask_kubernetes_values():
    assert monitors() == {}
    # As in dask-kubernetes, each needs both its flags.
    assert monitors("--set", "metrics.worker.podMonitor.enabled=true") == {}
    on = monitors("--set", "metrics.scheduler.enabled=true", "--set", "metrics.scheduler.serviceMonitor.enabled=true",
                  "--set", "metrics.worker.enabled=true", "--set", "metrics.worker.podMonitor.enabled=true",
                  "--set", "metrics.worker.podMonitor.namespace=monitoring",
                  "--set", "metrics.worker.podMonitor.namespaceSelector.any=true",
                  "--set", "metrics.scheduler.serviceMonitor.additionalLabels.release=prom")
    scheduler, worker = on["ServiceMonitor"], on["PodMonitor"]
    assert scheduler["spec"]["selector"] == {"matchLabels": {"dask.org/component": "scheduler"}}
    assert scheduler["spec"]["endpoints"] == [{"port": "http-dashboard", "path": "/metrics", "interval": "15s"}]
    assert scheduler["spec"]["namespaceSelector"] == {"matchNames": ["dask-system"]}
    assert scheduler["spec"]["targetLabels"] == ["dask.org/cluster-name"]
    assert scheduler["metadata"]["labels"]["release"] == "prom"
    assert worker["spec"]["selector"] == {"matchLabels": {"dask.org/component": "worker"}}
    assert worker["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    assert worker["metadata"]["namespace"] == "monitoring"
    assert worker["spec"]["namespaceSelector"] == {"any": True}
    # dask-kubernetes' chart ignores podTargetLabels (it reads targetLabels); here it is used.
    assert worker["spec"]["podTargetLabels"] == ["dask.org/cluster-name", "dask.org/workergroup-name"]
    bad = helm("template", "t", str(CHART), "--set", "metrics.worker.podMonitor.interval=often", check=False)
    assert bad.returncode != 0 and "interval" in bad.stderr


def operator_objects(*extra):
    docs = render(*extra)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))
    return kinds, deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_rbac_cluster_false_renders_a_role_and_a_namespaced_operator():
    kinds, args = operator_objects()
    assert ("ClusterRole", "t-dask-rs-operator") in kinds and not any(a.startswith("--namespace") for a in args)
    kinds, args = operator_objects("--set", "rbac.cluster=false")
    assert ("Role", "t-dask-rs-operator") in kinds and ("RoleBinding", "t-dask-rs-operator") in kinds
    assert not {k for k, _ in kinds} & {"ClusterRole", "ClusterRoleBinding"}
    assert "--namespace=dask-system" in args


def kubeconfig_for(kubectl, sa, ns, path):
    """A kubeconfig for the control plane that authenticates as ServiceAccount `sa` of `ns`."""
    config = json.loads(kubectl("config", "view", "--raw", "-o", "json"))
    token = kubectl("create", "token", sa, "-n", ns).strip()
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(json.dumps(config))
    return path


@pytest.mark.timeout(300)
def test_namespaced_install_reconciles_a_cluster_with_only_its_role(kubectl, tmp_path):
    """`rbac.cluster=false`: helm installs a Role, a RoleBinding and an operator
    told `--namespace`; the real operator, with exactly that identity and those
    arguments, reconciles dask-kubernetes' simplecluster.yaml in the namespace
    (kwok runs no process for the chart's pod, so the test runs the binary)."""
    ns = f"chart-ns-{uuid.uuid4().hex[:6]}"
    name = "nsop"
    helm("install", name, str(CHART), "--namespace", ns, "--create-namespace",
         "--set", "rbac.cluster=false", "--set", "crds.install=false", "--set", "gateway.enabled=false",
         "--set", "operator.nodeSelector.type=kwok", "--wait", "--timeout", "120s")
    proc = None
    try:
        sa = f"{name}-dask-rs-operator"
        assert can_i(kubectl, sa, ns, "create", "pods", ns)
        assert not can_i(kubectl, sa, ns, "create", "pods", "default")
        assert not can_i(kubectl, sa, ns, "list", "daskclusters.kubernetes.dask.org")
        deployment = kubectl.json("-n", ns, "get", "deployment", sa)
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={ns}" in args
        args = [a for a in args if not a.startswith("--metrics-addr")] + ["--metrics-addr=127.0.0.1:0"]

        default = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/dask-rs/target")) / "debug/dask-operator"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig_for(kubectl, sa, ns, tmp_path / "kubeconfig")),
               "POD_NAMESPACE": ns, "POD_NAME": "chart-test", "RUST_LOG": "info"}
        log = tmp_path / "operator.log"
        proc = subprocess.Popen([os.environ.get("DASK_OPERATOR_BIN", str(default)), *args],
                                env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        manifest = ROOT / "operator/tests/fixtures/dask-kubernetes/simplecluster.yaml"
        kubectl("apply", "-n", ns, "-f", str(manifest))

        def running():
            cluster = kubectl.json("-n", ns, "get", "daskcluster", "simple")
            pods = kubectl.json("-n", ns, "get", "pods", "-l", "dask.org/cluster-name=simple,dask.org/component=worker")
            return cluster.get("status", {}).get("phase") == "Running" and len(pods["items"]) == 2
        poll(running, 90, "the cluster to run with 2 workers")
        text = log.read_text()
        assert "Forbidden" not in text and "forbidden" not in text, text[-3000:]
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)
        helm("uninstall", name, "--namespace", ns, check=False)
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
