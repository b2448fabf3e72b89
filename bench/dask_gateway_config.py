# The Python reference server for bench/gateway.sh: dask-gateway-server with
# the local backend, simple auth and the same three profiles as ours.
import os
import sys

from dask_gateway_server.options import Options, Select

port = int(os.environ.get("BENCH_PY_PORT", "18100"))
venv_bin = os.path.dirname(sys.executable)

c.DaskGateway.address = f"127.0.0.1:{port + 1}"
c.Proxy.address = f"127.0.0.1:{port}"
c.Proxy.tcp_address = f"127.0.0.1:{port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.DaskGateway.log_level = "WARN"
c.ClusterConfig.scheduler_cmd = [os.path.join(venv_bin, "dask"), "scheduler"]
c.ClusterConfig.worker_cmd = [os.path.join(venv_bin, "dask"), "worker"]

profiles = {"small": (1, "1 G"), "medium": (2, "2 G"), "larger": (4, "4 G")}
c.Backend.cluster_options = Options(
    Select("profile", ["small", "medium", "larger"], default="small", label="Cluster profile"),
    handler=lambda o: {"worker_cores": profiles[o.profile][0], "worker_memory": profiles[o.profile][1]},
)
