"""Fork server of the dask-rs gateway's local backend: imports `distributed`
once, then forks a configured `dask worker` per request, in milliseconds
instead of the ~1 s a fresh interpreter takes to import it.

The gateway talks to it over a stream socket pair it inherited (the
descriptor's number is in DASK_GATEWAY_FORKSERVER_FD), one JSON line each
way per request:

    {"id": 1, "cwd": dir, "log": path, "env": {...}, "args": ["tls://...", ...]}
    {"id": 1, "pid": 1234}        or        {"id": 1, "error": "..."}

No event loop and no thread runs here before a fork: the child starts from
a clean interpreter that has only imported modules. Each child is the leader
of its own session and process group (the gateway kills the group),
outlives this server and the gateway (a restarted gateway adopts it), and
is reaped by the kernel (SIGCHLD ignored here) so that its pid stops
existing the moment it exits.
"""

import ctypes
import json
import os
import signal
import socket
import sys
import traceback

import dask
import distributed  # noqa: F401  (the point of this process: imported once)
import distributed.http.worker.prometheus  # noqa: F401
from distributed.cli.dask_worker import main as dask_worker

try:
    # The worker's dashboard (bokeh): a second of import per worker otherwise.
    import distributed.dashboard.worker  # noqa: F401
except ImportError:
    pass

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _child(request, channel):
    code = 1
    try:
        channel.close()
        # Its own session and process group, and no parent-death signal:
        # a worker outlives a restart of the gateway (its nanny preload ends
        # it when its scheduler exits).
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.update(request["env"])
        # The worker's TLS files and DASK_* settings come from this
        # environment: read it again, as a fresh `dask worker` would.
        dask.config.refresh()
        dask_worker.main(request["args"], prog_name="dask worker", standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(channel):
    reader = channel.makefile("rb")
    channel.sendall(b'{"ready": true}\n')
    for line in reader:
        try:
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except Exception as e:  # a bad request or no memory: say so, keep serving
            reply = {"id": None, "error": str(e)}
        else:
            if pid == 0:
                reader.close()
                _child(request, channel)
            reply = {"id": request.get("id"), "pid": pid}
        channel.sendall(json.dumps(reply).encode() + b"\n")


def main():
    channel = socket.socket(fileno=int(os.environ.pop("DASK_GATEWAY_FORKSERVER_FD")))
    channel.setblocking(True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _die_with_parent()
    serve(channel)


if __name__ == "__main__":
    main()
