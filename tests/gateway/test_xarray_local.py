"""The seed notebook's xarray cells on the embedded default (local backend)
with the real dask-gateway client: a dask-chunked Dataset with a daily time
axis over three years, a yearly resample, a mask, `sel(method="nearest")`,
compute, and a zarr round trip written by the cluster's workers. The
schedulers and workers run from the test venv, which holds the worker image's
environment (xarray, zarr, pandas …)."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth
from distributed import get_task_stream


def daily_temperatures():
    """Three years of daily values on a small lat/lon grid, in memory."""
    time = pd.date_range("2020-01-01", "2022-12-31", freq="D")
    lat = np.linspace(-60.0, 60.0, 9)
    lon = np.linspace(0.0, 350.0, 36)
    rng = np.random.default_rng(42)
    seasonal = 10 * np.sin(2 * np.pi * time.day_of_year.to_numpy() / 365.25)
    temp = 15 + seasonal[:, None, None] + rng.normal(0, 3, (time.size, lat.size, lon.size))
    return xr.Dataset(
        {"temp": (("time", "lat", "lon"), temp)},
        coords={"time": time, "lat": lat, "lon": lon},
    )


def seed_cells(ds):
    """The notebook's computation, lazy when `ds` is dask-backed."""
    yearly = ds.temp.resample(time="YS").mean()
    warm = yearly.where(yearly > 15.0)  # the mask: only warm cells count
    point = yearly.sel(lat=12.3, lon=47.0, method="nearest")
    return yearly, warm.mean(("lat", "lon")), point


@pytest.mark.timeout(240)
def test_seed_xarray_cells_run_on_the_local_backend(gateway, tmp_path):
    client_gateway = Gateway(gateway.address, auth=BasicAuth("alice", ""))
    cluster = client_gateway.new_cluster()
    try:
        cluster.scale(2)
        client = cluster.get_client()
        client.wait_for_workers(2, timeout=90)

        # The workers import xarray themselves: the cells run over there.
        versions = client.run(lambda: __import__("xarray").__version__)
        assert len(versions) == 2 and set(versions.values()) == {xr.__version__}, versions

        eager = daily_temperatures()
        ds = eager.chunk({"time": 365})
        assert ds.temp.chunks is not None and len(ds.temp.chunks[0]) == 4

        yearly, warm_mean, point = seed_cells(ds)
        with get_task_stream(client) as stream:
            yearly, warm_mean, point = client.compute([yearly, warm_mean, point], sync=True)
        ran_on = {task["worker"] for task in stream.data}
        assert ran_on <= set(versions) and ran_on, ran_on

        # The same cells in this process, without dask, give the same answers.
        want_yearly, want_warm, want_point = seed_cells(eager)
        assert list(yearly.time.dt.year.values) == [2020, 2021, 2022]
        xr.testing.assert_allclose(yearly, want_yearly)
        xr.testing.assert_allclose(warm_mean, want_warm)
        xr.testing.assert_allclose(point, want_point)
        assert float(point.lat) == 15.0 and float(point.lon) == 50.0
        # And by hand with numpy, for one year at the chosen point.
        days_2021 = eager.temp.sel(time="2021", lat=15.0, lon=50.0).values
        assert float(point.sel(time="2021-01-01")) == pytest.approx(days_2021.mean())
        # The mask really drops cells: some years/places are below 15 °C.
        assert np.isnan(yearly.where(yearly > 15.0)).any() and (yearly > 15.0).any()

        # A zarr store written by the workers, read back here.
        store = tmp_path / "temps.zarr"
        with get_task_stream(client) as stream:
            ds.to_zarr(store, mode="w", consolidated=False)
        assert {task["worker"] for task in stream.data} <= set(versions) and stream.data
        back = xr.open_zarr(store, consolidated=False)
        assert back.temp.chunks[0] == ds.temp.chunks[0]
        xr.testing.assert_allclose(back.temp.load(), eager.temp)

        client.close()
    finally:
        cluster.shutdown()
    client_gateway.close()
