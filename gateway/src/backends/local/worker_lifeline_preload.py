"""Nanny preload of the dask-rs gateway's local backend: a worker ends
itself the moment its cluster's scheduler process exits.

Workers lead process groups of their own (the gateway stops them by
group), so neither the gateway's death nor the scheduler's reaches them by
itself. This watches the scheduler's pid (DASK_GATEWAY_SCHEDULER_PID)
through a pidfd, which cannot be fooled by the pid's reuse, and ends this
nanny's group (nanny and worker) when it exits.
"""

import asyncio
import logging
import os
import signal

logger = logging.getLogger("distributed.nanny.lifeline")


def _end_group(reason):
    logger.error("%s: shutting down", reason)
    group = os.getpgrp()
    try:
        os.killpg(group, signal.SIGTERM)
    except OSError:
        pass
    asyncio.get_running_loop().call_later(10, os.killpg, group, signal.SIGKILL)


def dask_setup(nanny):
    pid = os.environ.get("DASK_GATEWAY_SCHEDULER_PID")
    if not pid:
        return
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(int(pid))
    except ProcessLookupError:
        loop.call_soon(_end_group, "the scheduler is gone")
        return
    except (AttributeError, OSError, ValueError) as e:
        logger.warning("not watching the scheduler (%s)", e)
        return

    def exited():
        loop.remove_reader(pidfd)
        os.close(pidfd)
        _end_group("the scheduler exited")

    loop.add_reader(pidfd, exited)
    nanny._gateway_lifeline = pidfd
