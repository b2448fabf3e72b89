"""End-to-end fixtures: the project's images loaded into the pods tier and the
Helm chart installed from this checkout. Image archives come from
tests/images/build (tests/run builds them and exports their paths)."""

import os
import subprocess
import uuid
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
def release(kubectl):
    """The chart, installed once per session into its own namespace."""
    ns = f"dask-rs-{uuid.uuid4().hex[:6]}"
    operator_repo, operator_tag = image_ref("DASK_RS_OPERATOR_IMAGE")
    args = [
        "helm", "install", "dr", str(ROOT / "charts" / "dask-rs"), "--namespace", ns, "--create-namespace",
        "--set", f"operator.image.repository={operator_repo}", "--set", f"operator.image.tag={operator_tag}",
        "--set", "operator.image.pullPolicy=Never",
    ]
    subprocess.run([*args, "--wait", "--timeout", "180s"], check=True, capture_output=True, text=True)
    yield ns
    subprocess.run(["helm", "uninstall", "dr", "--namespace", ns, "--wait"], capture_output=True)
    kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
