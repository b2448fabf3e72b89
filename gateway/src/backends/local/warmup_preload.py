"""Scheduler preload of the dask-rs gateway's local backend: once the
scheduler listens, it opens one TLS connection to itself and asks who it is.

A scheduler's first connection costs ~80 ms more than the next ones (code
paths and TLS state that Python sets up on first use). A pooled scheduler
pays that while it waits, not while the user's client connects.
"""

import asyncio
import logging

logger = logging.getLogger("distributed.scheduler.warmup")


async def _warm_up(scheduler):
    from distributed.comm import connect

    try:
        comm = await connect(scheduler.address, timeout=10, **scheduler.connection_args)
        try:
            await comm.write({"op": "identity", "reply": True})
            await comm.read()
        finally:
            await comm.close()
    except Exception as e:  # only an optimisation: never a reason to fail
        logger.info("warm-up connection failed: %s", e)


async def dask_setup(scheduler):
    scheduler._gateway_warmup = asyncio.ensure_future(_warm_up(scheduler))
