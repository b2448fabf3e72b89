"""Fixtures for the gateway tests (see gatewaylib)."""

import os

import pytest

from gatewaylib import Gateway


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
