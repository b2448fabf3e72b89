"""Fixtures of the platform test (tests/platform/run): the e2e suite's image
helpers, and the whole platform deployed once per session: the dask-rs chart
as release "dask" with charts/dask-rs/examples/jupyterhub/dask-rs-values.yaml,
and the z2jh-like JupyterHub of deploy.py, in the namespace "jhub"."""

import json
import os
import subprocess
import time

import pytest
from e2e.conftest import chart_image_values, image_ref  # noqa: F401 (a fixture, and a helper)
from testlib import poll

import deploy
from platformlib import (CLUSTER_NAMESPACE, RELEASE, ROOT, Platform, answers, describe, ensure_crds, image,
                         other_operators, teardown)


@pytest.fixture(scope="session")
def timings():
    values = {}
    yield values
    print("\nplatform timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in values.items()))


@pytest.fixture(scope="session")
def platform(kubectl, chart_image_values, timings, tmp_path_factory):  # noqa: F811
    others = other_operators(kubectl)
    if others:
        pytest.fail(f"another dask-rs operator runs on this tier ({', '.join(others)}): it would reconcile this test's "
                    "DaskClusters too; run tests/platform/run when tests/e2e is not running")
    for ns in (deploy.NAMESPACE, CLUSTER_NAMESPACE):
        if kubectl.run("get", "namespace", ns, check=False).returncode == 0:
            pytest.fail(f"namespace {ns} exists (a previous run's?): `tests/platform/run clean` removes it")
    tmp = tmp_path_factory.mktemp("platform")
    started = time.monotonic()
    crds = ensure_crds(kubectl)

    # The Hub side first: the gateway reads its token from the Secret "hub".
    values = deploy.hub_values(image("DASK_RS_NOTEBOOK_IMAGE"))
    tokens = deploy.generated_secrets(values)
    kubectl("create", "namespace", deploy.NAMESPACE)
    try:
        objects = deploy.manifests(values, tokens, image("DASK_RS_HUB_IMAGE"), image("DASK_RS_PROXY_IMAGE"))
        kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))

        # The chart with the documented values; only the images (and, on a tier
        # whose CRDs another release owns, the CRDs) differ.
        operator_repo, operator_tag = image_ref("DASK_RS_OPERATOR_IMAGE")
        args = ["helm", "install", RELEASE, str(ROOT / "charts" / "dask-rs"), "--namespace", deploy.NAMESPACE,
                "-f", str(deploy.EXAMPLES / "dask-rs-values.yaml"),
                "--set", f"operator.image.repository={operator_repo}", "--set", f"operator.image.tag={operator_tag}",
                "--set", "operator.image.pullPolicy=Never", *chart_image_values,
                "--set", "crds.install=false", "--wait", "--timeout", "300s"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=360)
        assert proc.returncode == 0, f"helm install failed: {proc.stderr}\n{describe(kubectl)}"
        for name in ("hub", "proxy"):
            proc = kubectl.run("rollout", "status", f"deployment/{name}", "-n", deploy.NAMESPACE, "--timeout=110s",
                               check=False)
            assert proc.returncode == 0, f"{name} not ready: {proc.stderr}\n{describe(kubectl)}"
        (tmp / "values.json").write_text(json.dumps(values, indent=1))
        p = Platform(kubectl, values, tokens, timings)
        # kube-proxy programs new Services a moment after their pods are ready.
        poll(lambda: answers(f"{p.public_url}/hub/health"), 60, "the Hub behind proxy-public")
        poll(lambda: answers(f"{p.gateway_url}/api/health"), 60, "the gateway Service")
        timings["deploy (CRDs " + crds + ")"] = time.monotonic() - started
        yield p
    finally:
        if os.environ.get("PLATFORM_KEEP"):
            print("\nPLATFORM_KEEP: left deployed; `tests/platform/run clean` removes it")
        else:
            teardown(kubectl)
