"""Fixtures for the gateway tests (see gatewaylib)."""

import os
import subprocess
from pathlib import Path

import pytest

from gatewaylib import Gateway

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def start_gateway(tmp_path):
    started = []

    def start(config="", env=None, backend=None, dask=None, local_options=""):
        gw = Gateway(tmp_path, config, env, backend, dask, local_options)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
        if os.environ.get("DASK_RS_SHOW_LOGS"):
            print(gw.log_path.read_text())


@pytest.fixture
def gateway(start_gateway):
    return start_gateway()


@pytest.fixture
def operator(kubectl, namespace, tmp_path):
    """The operator binary of this checkout, watching the test's namespace,
    with the checkout's CRDs applied (forcing: another run's copy may differ)."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds/yaml"))
    default = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/dask-rs/target")) / "debug/dask-operator"
    log = open(tmp_path / "operator.log", "wb")
    proc = subprocess.Popen([os.environ.get("DASK_OPERATOR_BIN", str(default)), "--namespace", namespace, "--metrics-addr", "127.0.0.1:0"],
                            stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    proc.wait(10)
