"""Fixtures shared by the Python test suites: a kubectl wrapper bound to the
running test control plane (``tests/k8s/cluster up sim``, or the ``pods`` tier
for tests/e2e, which run inside its network namespace) and a fresh namespace per
test."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

K8S_DIR = Path(__file__).resolve().parent / "k8s"


class Kubectl:
    def __init__(self, kubeconfig):
        self.kubeconfig = kubeconfig

    def run(self, *args, input=None, check=True):
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", self.kubeconfig, *args],
            input=input, capture_output=True, text=True, timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def __call__(self, *args, input=None):
        return self.run(*args, input=input).stdout

    def json(self, *args):
        return json.loads(self("-o", "json", *args))


@pytest.fixture(scope="session")
def kubectl():
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).exists():
        pytest.fail("no control plane: run `tests/k8s/cluster up sim` and `eval \"$(tests/k8s/cluster env)\"`")
    return Kubectl(kubeconfig)


@pytest.fixture
def namespace(kubectl):
    name = f"harness-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def mint_user():
    def mint(name, *groups):
        out = subprocess.run([str(K8S_DIR / "cluster"), "user", name, *groups],
                             env={**os.environ, "DASK_RS_CLUSTER_DIR": str(Path(os.environ["KUBECONFIG"]).parent)},
                             capture_output=True, text=True, check=True)
        return Kubectl(out.stdout.strip())
    return mint
