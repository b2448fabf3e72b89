# The platform test's Hub configuration: zero-to-jupyterhub's
# jupyterhub_config.py reduced to the values the test deploys. Like z2jh, it
# reads the Helm values (charts/dask-rs/examples/jupyterhub/z2jh-values.yaml
# merged with the test's own, tests/platform/deploy.py) and the generated
# secrets from the Secret "hub" mounted at /usr/local/etc/jupyterhub/secret,
# and translates each key the way z2jh's own config does. A value this file
# does not translate stops the Hub (so the recipe is never silently half
# applied): teach it the key, as z2jh does, when the recipe grows one.
import json
import os
from pathlib import Path

SECRET = Path("/usr/local/etc/jupyterhub/secret")
values = json.loads((SECRET / "values.json").read_text())
c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)


def get_secret_value(key):
    """z2jh's get_secret_value: one key of the Secret "hub"."""
    return (SECRET / key).read_text()


def take(mapping, key, default=None):
    """The value of key, removed from mapping: what is left at the end was not translated."""
    return mapping.pop(key, default)


hub = values.get("hub", {})
singleuser = values.get("singleuser", {})
release = os.environ["HELM_RELEASE_NAME"]

# --- what z2jh's templates and defaults fix (not from the values) ---
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.hub_bind_url = "http://:8081"
# The Service "hub" (z2jh: http://hub:$(HUB_SERVICE_PORT)).
c.JupyterHub.hub_connect_url = "http://hub:8081"
# The proxy runs in its own pod (z2jh's proxy Deployment, Service "proxy-api").
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://proxy-api:8001"
c.ConfigurableHTTPProxy.auth_token = get_secret_value("hub.config.ConfigurableHTTPProxy.auth_token")
c.JupyterHub.cookie_secret = bytes.fromhex(get_secret_value("hub.config.JupyterHub.cookie_secret"))
c.CryptKeeper.keys = get_secret_value("hub.config.CryptKeeper.keys").split(";")
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
c.JupyterHub.last_activity_interval = 60
# z2jh's default authenticator; any name signs in.
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True

c.KubeSpawner.namespace = os.environ["POD_NAMESPACE"]
# z2jh's common labels: its singleuser NetworkPolicy selects app, release and component.
c.KubeSpawner.common_labels = {"app": "jupyterhub", "heritage": "jupyterhub", "release": release}
c.KubeSpawner.start_timeout = 300
c.KubeSpawner.http_timeout = 30
c.KubeSpawner.port = 8888
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.events_enabled = True
c.KubeSpawner.delete_grace_period = 1

# --- hub.* ---
services = take(hub, "services", {})
for key, service in services.items():
    # z2jh: hub.services is a dict of dicts (mergeable); apiToken comes from the Secret "hub".
    service.setdefault("name", key)
    service.pop("apiToken", None)
    service["api_token"] = get_secret_value(f"hub.services.{key}.apiToken")
    c.JupyterHub.services.append(service)
for key, role in take(hub, "loadRoles", {}).items():
    role.setdefault("name", key)
    c.JupyterHub.load_roles.append(role)

# --- singleuser.* ---
su_image = take(singleuser, "image", {})
c.KubeSpawner.image = f"{su_image['name']}:{su_image['tag']}"
c.KubeSpawner.image_pull_policy = su_image.get("pullPolicy", "IfNotPresent")
# z2jh's default singleuser.extraLabels.
c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true", **take(singleuser, "extraLabels", {})}
c.KubeSpawner.environment.update(take(singleuser, "extraEnv", {}))
extra_files = take(singleuser, "extraFiles", {})
if extra_files:
    # z2jh: every file is a key of the Secret "singleuser", mounted by subPath.
    items = [{"key": key, "path": key, **({"mode": f["mode"]} if "mode" in f else {})}
             for key, f in extra_files.items()]
    c.KubeSpawner.volumes.append({"name": "files", "secret": {"secretName": "singleuser", "items": items}})
    c.KubeSpawner.volume_mounts.extend(
        {"name": "files", "mountPath": f["mountPath"], "subPath": key} for key, f in extra_files.items())
memory = take(singleuser, "memory", {"guarantee": "1G"})  # z2jh's default
c.KubeSpawner.mem_guarantee = memory.get("guarantee")
c.KubeSpawner.mem_limit = memory.get("limit")
storage = take(singleuser, "storage", {"type": "dynamic"})
if storage.get("type") != "none":
    raise SystemExit(f"singleuser.storage {storage} is not translated (the test runs with type: none)")
c.KubeSpawner.storage_pvc_ensure = False
# The NetworkPolicies are the deployment's (tests/platform/deploy.py renders them from these values).
take(singleuser, "networkPolicy")

left = {section: rest for section, rest in (("hub", hub), ("singleuser", singleuser)) if rest}
left.update({k: v for k, v in values.items() if k not in ("hub", "singleuser", "proxy")})
if left:
    raise SystemExit(f"jupyterhub_config.py does not translate these values: {json.dumps(left)}")
