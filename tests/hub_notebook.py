"""A JupyterHub user's notebook, run as a script where a single-user server
runs: in a pod whose environment is the chart's recipe (DASK_GATEWAY__* from
the ConfigMap, plus the JUPYTERHUB_API_TOKEN the Hub gives every single-user
server), or by tests/gateway/notebook_server.py, which the Hub itself spawns.
The cells are the seed notebook's, unchanged: `Gateway()` with no arguments.
Run as a script, the last line printed is a JSON report."""

import json
import socket
import time
import urllib.parse
import urllib.request

import numpy as np
import pandas as pd
import xarray as xr


def daily_temperatures():
    """Three years of daily values on a small lat/lon grid (deterministic)."""
    time_axis = pd.date_range("2020-01-01", "2022-12-31", freq="D")
    lat = np.linspace(-60.0, 60.0, 9)
    lon = np.linspace(0.0, 350.0, 36)
    rng = np.random.default_rng(42)
    seasonal = 10 * np.sin(2 * np.pi * time_axis.day_of_year.to_numpy() / 365.25)
    temp = 15 + seasonal[:, None, None] + rng.normal(0, 3, (time_axis.size, lat.size, lon.size))
    return xr.Dataset({"temp": (("time", "lat", "lon"), temp)}, coords={"time": time_axis, "lat": lat, "lon": lon})


def seed_cells(ds):
    yearly = ds.temp.resample(time="YS").mean()
    warm = yearly.where(yearly > 15.0)
    point = yearly.sel(lat=12.3, lon=47.0, method="nearest")
    return yearly.mean(("lat", "lon")), warm.mean(("lat", "lon")), point


def run_cells():
    """The notebook's cells; returns what the tests check."""
    report = {}
    started = time.monotonic()

    # --- the notebook's cells ---
    from dask_gateway import Gateway
    gateway = Gateway()
    options = gateway.cluster_options()
    report["default_profile"] = options.profile
    report["profiles"] = list(options._fields["profile"].options)
    options.profile = "small"
    cluster = gateway.new_cluster(cluster_options=options)
    cluster.scale(2)
    client = cluster.get_client()
    client.wait_for_workers(2, timeout=300)
    report["seconds_to_two_workers"] = round(time.monotonic() - started, 2)
    print(cluster.dashboard_link, flush=True)
    if urllib.parse.urlsplit(cluster.dashboard_link).scheme:
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as resp:
            report["dashboard"] = [resp.status, b"bokeh" in resp.read().lower()]
    else:
        # A link relative to the Hub (DASK_GATEWAY__PUBLIC_ADDRESS=/services/dask-gateway,
        # as z2jh/daskhub set it) is the user's browser's, which resolves it
        # against the Hub's URL; the platform test opens it in one.
        report["dashboard"] = None

    ds = daily_temperatures().chunk({"time": 365})
    yearly, warm, point = client.compute(list(seed_cells(ds)), sync=True)
    report["yearly"] = yearly.values.tolist()
    report["warm"] = warm.values.tolist()
    report["point"] = point.values.tolist()
    report["point_at"] = [float(point.lat), float(point.lon)]
    report["workers"] = sorted(client.run(socket.gethostname).values())
    report["cluster"] = cluster.name
    report["address"] = gateway.address
    report["proxy_address"] = gateway.proxy_address
    report["dashboard_link"] = cluster.dashboard_link

    client.close()
    cluster.shutdown()
    # --- end of the cells ---
    report["clusters_after_shutdown"] = [c.name for c in gateway.list_clusters()]
    return report


if __name__ == "__main__":
    print(json.dumps(run_cells()), flush=True)
