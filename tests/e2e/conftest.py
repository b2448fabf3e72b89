"""End-to-end fixtures: the project's images loaded into the pods tier and the
Helm chart installed from this checkout. Image archives come from
tests/images/build (tests/run builds them and exports their paths)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def image_ref(var):
    """dask-rs.local/<name>:<tag> of an image archive named <name>-<tag>.tar."""
    path = os.environ.get(var)
    if not path:
        pytest.fail(f"{var} is not set: build the image with tests/images/build and export its path")
    name, tag = Path(path).stem.rsplit("-", 1)
    return f"dask-rs.local/{name}", tag


@pytest.fixture(scope="session")
def worker_image():
    repo, tag = image_ref("DASK_RS_WORKER_IMAGE")
    return f"{repo}:{tag}"


@pytest.fixture(scope="session")
def chart_image_values():
    """`helm --set` arguments for the gateway's and the clusters' images under test."""
    gateway_repo, gateway_tag = image_ref("DASK_RS_GATEWAY_IMAGE")
    worker_repo, worker_tag = image_ref("DASK_RS_WORKER_IMAGE")
    return [
        "--set", f"gateway.image.repository={gateway_repo}", "--set", f"gateway.image.tag={gateway_tag}",
        "--set", "gateway.image.pullPolicy=Never",
        "--set", f"gateway.workerImage.repository={worker_repo}", "--set", f"gateway.workerImage.tag={worker_tag}",
    ]


@pytest.fixture(scope="session")
def release(kubectl, chart_image_values):
    """The chart, installed once per session. Always the same release and
    namespace: the CRDs outlive an uninstall (resource-policy keep), and Helm
    re-adopts them only into the release that made them."""
    ns = "dask-system"
    operator_repo, operator_tag = image_ref("DASK_RS_OPERATOR_IMAGE")
    args = [
        "helm", "install", "dr", str(ROOT / "charts" / "dask-rs"), "--namespace", ns, "--create-namespace",
        "--set", f"operator.image.repository={operator_repo}", "--set", f"operator.image.tag={operator_tag}",
        "--set", "operator.image.pullPolicy=Never", *chart_image_values,
    ]
    proc = subprocess.run([*args, "--wait", "--timeout", "180s"], capture_output=True, text=True)
    assert proc.returncode == 0, f"helm install failed: {proc.stderr}"
    yield ns
    subprocess.run(["helm", "uninstall", "dr", "--namespace", ns, "--wait"], capture_output=True)
    kubectl.run("delete", "namespace", ns, "--timeout=120s", check=False)
