"""Scheduler preload of the dask-rs gateway: each dask-gateway heartbeat also
says how many clients are connected and for how long there has been none,
so that the gateway can stop a cluster its notebook forgot
(`cluster.idle_client_timeout`).

It runs after `dask_gateway.scheduler_preload`, whose heartbeat message it
extends. The scheduler keeps the clock, not the gateway: the figure survives
a gateway restart and reads the same on every gateway replica. The dashboard
is not a client, and neither is the scheduler's own "fire-and-forget" entry.
"""

import logging
import time

from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger("distributed.scheduler.presence")

# Not a client: the scheduler's bookkeeping entry for fire-and-forget futures.
_NOT_CLIENTS = {"fire-and-forget"}


class ClientPresence(SchedulerPlugin):
    name = "dask-rs-client-presence"

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.alone_since = time.monotonic()

    def add_client(self, scheduler, client):
        # A client that came and went between two heartbeats still resets the clock.
        self.alone_since = None

    def report(self):
        clients = sum(1 for c in self.scheduler.clients if c not in _NOT_CLIENTS)
        if clients:
            self.alone_since = None
            return clients, 0.0
        if self.alone_since is None:
            self.alone_since = time.monotonic()
        return 0, time.monotonic() - self.alone_since


def dask_setup(scheduler):
    service = scheduler.services.get("gateway")
    if service is None:
        logger.warning("no dask-gateway service on this scheduler: client presence not reported")
        return
    presence = ClientPresence(scheduler)
    scheduler.add_plugin(presence)
    send = service.gateway.heartbeat

    async def heartbeat(msg):
        msg["clients"], msg["clientless_seconds"] = presence.report()
        return await send(msg)

    service.gateway.heartbeat = heartbeat
