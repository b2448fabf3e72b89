"""The chart's operator options, with the real helm against the real API
server: dask-kubernetes' monitors of the Dask clusters (PodMonitor,
ServiceMonitor), and a namespaced install (`rbac.cluster=false`) whose
operator, with only its Role, reconciles dask-kubernetes' simplecluster."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from test_chart import CHART, ROOT, can_i, helm, render
from testlib import poll


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
