"""The Helm chart, checked with the real helm against the real API server:
lint, schema validation of values, server-side validation of every rendered
object, and an install whose RBAC grants exactly what each component needs."""

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
