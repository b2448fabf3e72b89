"""Scheduler preload of the dask-rs gateway's local backend: the cluster
ends itself when its gateway is gone for good.

A cluster outlives a restart of its gateway (the new one adopts it), so
nothing kills it when the gateway dies. dask_gateway's own preload retries
failed heartbeats forever; this one, loaded after it, counts the time since
the last heartbeat the gateway acknowledged, and past
DASK_GATEWAY_LIFELINE_SECONDS ends the scheduler's process group (its
workers, each in a group of its own, follow when they see it exit).

A restarted gateway may listen for heartbeats on another port: after a
failed heartbeat the URL is read again from DASK_GATEWAY_API_URL_FILE,
which every gateway writes at start.
"""

import asyncio
import logging
import os
import signal
import time

logger = logging.getLogger("distributed.scheduler.lifeline")


def _current_url(path, fallback):
    try:
        with open(path) as f:
            url = f.read().strip()
        return url or fallback
    except OSError:
        return fallback


def _end_group():
    group = os.getpgrp()
    try:
        os.killpg(group, signal.SIGTERM)
    except OSError:
        pass
    # Whatever ignores SIGTERM gets SIGKILL.
    asyncio.get_running_loop().call_later(10, os.killpg, group, signal.SIGKILL)


async def _watch(state, window, period):
    while True:
        await asyncio.sleep(period)
        silent = time.monotonic() - state["acknowledged"]
        if silent > window:
            logger.error(
                "no heartbeat acknowledged by the gateway for %.0f s (limit %.0f s): shutting down",
                silent,
                window,
            )
            _end_group()
            return


def dask_setup(scheduler):
    service = scheduler.services.get("gateway")
    window = float(os.environ.get("DASK_GATEWAY_LIFELINE_SECONDS", "0") or 0)
    if service is None or window <= 0:
        return
    client = service.gateway
    url_file = os.environ.get("DASK_GATEWAY_API_URL_FILE")
    state = {"acknowledged": time.monotonic()}
    send = client.heartbeat

    async def heartbeat(msg):
        try:
            await send(msg)
        except Exception:
            if url_file:
                client.api_url = _current_url(url_file, client.api_url)
            raise
        state["acknowledged"] = time.monotonic()

    client.heartbeat = heartbeat
    scheduler._gateway_lifeline = asyncio.ensure_future(
        _watch(state, window, min(1.0, window / 4))
    )
