"""Scheduler preload of the dask-rs gateway's local backend: takes client
connections the gateway hands over instead of relaying them.

The gateway reads a connection's TLS server name without consuming a byte,
then passes the socket itself to this scheduler over a Unix datagram socket
pair the scheduler inherited (SCM_RIGHTS; the descriptor's number is in
DASK_GATEWAY_HANDOFF_FD). The scheduler's own TLS listener takes it from there, exactly
as if it had accepted it, so client traffic never makes a second TCP hop
through the gateway. Without this preload the gateway relays instead.
"""

import asyncio
import logging
import os
import socket

logger = logging.getLogger("distributed.scheduler.handoff")


def _tls_listener(scheduler):
    for listener in scheduler.listeners:
        if getattr(listener, "prefix", None) == "tls://" and getattr(listener, "tcp_server", None) is not None:
            return listener
    return None


def _adopt(listener, fd):
    conn = socket.socket(fileno=fd)
    server = listener.tcp_server
    try:
        peer = conn.getpeername()
    except OSError:
        conn.close()
        return
    if server is None:  # the scheduler is closing
        conn.close()
        return
    # Tornado's accept path: TLS wrap, IOStream, the listener's handle_stream.
    server._handle_connection(conn, peer)


# Bound in the scheduler's working directory (its cluster's 0700
# directory): a gateway restarted after this one's started connects to it
# there, since the socket pair's other end died with the old gateway.
HANDOFF_SOCKET = "handoff.sock"


def _receiver(listener, channel):
    def receive():
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(channel, 16, 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                logger.warning("connection handoff failed: %s", e)
                return
            for received in fds:
                try:
                    _adopt(listener, received)
                except Exception:
                    logger.exception("could not take over a handed-off connection")

    return receive


def _bind_named(listener):
    try:
        os.unlink(HANDOFF_SOCKET)
    except FileNotFoundError:
        pass
    named = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        named.bind(HANDOFF_SOCKET)
        os.chmod(HANDOFF_SOCKET, 0o600)
    except OSError as e:
        named.close()
        logger.warning("no named handoff socket (%s): a restarted gateway relays", e)
        return None
    named.setblocking(False)
    asyncio.get_running_loop().add_reader(named.fileno(), _receiver(listener, named))
    return named


def dask_setup(scheduler):
    fd = os.environ.get("DASK_GATEWAY_HANDOFF_FD")
    listener = _tls_listener(scheduler)
    if not fd or listener is None:
        return
    try:
        channel = socket.socket(fileno=int(fd))
    except (OSError, ValueError) as e:
        logger.warning("connection handoff disabled (%s); the gateway relays instead", e)
        return
    channel.setblocking(False)
    asyncio.get_running_loop().add_reader(channel.fileno(), _receiver(listener, channel))
    scheduler._gateway_handoff = [channel]
    named = _bind_named(listener)
    if named is not None:
        scheduler._gateway_handoff.append(named)
    # Until this arrives the gateway relays: nothing is handed to a
    # scheduler that would not pick it up.
    channel.send(b"ready")
    logger.info("taking connections handed over by the gateway")


def dask_teardown(scheduler):
    for channel in getattr(scheduler, "_gateway_handoff", []):
        try:
            asyncio.get_running_loop().remove_reader(channel.fileno())
        except RuntimeError:
            pass
        channel.close()
