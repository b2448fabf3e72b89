"""The JupyterHub side of the platform test, as zero-to-jupyterhub deploys it:
the objects z2jh's chart renders for charts/dask-rs/examples/jupyterhub/z2jh-values.yaml
(plus the test's own values: images, an admin service for the test driver,
no storage), written here because z2jh's chart and images are not available
offline. Stand-ins, named as such in docs/platform-test.md:

- the Hub and proxy images are tests/images/build's `hub` (JupyterHub 6.1.1
  and jupyterhub-kubespawner from PyPI) and `proxy` (configurable-http-proxy
  5.3.0 from npm), not quay.io/jupyterhub/k8s-hub and
  quay.io/jupyterhub/configurable-http-proxy;
- the Hub's jupyterhub_config.py is tests/platform/jupyterhub_config.py, z2jh's
  own reduced to the values this recipe uses;
- the objects below are z2jh's templates (hub, proxy, singleuser) reduced the
  same way: Deployments, Services, RBAC, Secrets, and the three
  NetworkPolicies with z2jh's default rules.

Everything is in NAMESPACE ("jhub"), the Helm release name z2jh would have is
HUB_RELEASE ("jhub"), and the dask-rs chart is release "dask" beside it, as
the example values expect."""

import copy
import json
import secrets
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "charts" / "dask-rs" / "examples" / "jupyterhub"
NAMESPACE = "jhub"
HUB_RELEASE = "jhub"
# The test driver's own Hub service: it creates users and starts their servers.
ADMIN_SERVICE = "platform-test"

PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
METADATA = "169.254.169.254/32"
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def labels(component):
    """z2jh's jupyterhub.matchLabels for a component."""
    return {"app": "jupyterhub", "release": HUB_RELEASE, "component": component}


def deep_merge(base, extra):
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def hub_values(notebook_image):
    """z2jh-values.yaml as documented, plus what this deployment adds (as a
    second -f file would): the notebook image, no home volumes, and a service
    with an admin token for the test driver."""
    documented = yaml.safe_load((EXAMPLES / "z2jh-values.yaml").read_text())
    name, tag = notebook_image.rsplit(":", 1)
    ours = {
        "hub": {
            "services": {ADMIN_SERVICE: {}},
            "loadRoles": {ADMIN_SERVICE: {
                "scopes": ["admin:users", "admin:servers", "tokens", "list:users", "read:users"],
                "services": [ADMIN_SERVICE]}},
        },
        "singleuser": {
            "image": {"name": name, "tag": tag, "pullPolicy": "IfNotPresent"},
            "storage": {"type": "none"},
        },
    }
    return deep_merge(documented, ours)


def generated_secrets(values):
    """What z2jh generates into its Secret "hub" (and keeps across upgrades)."""
    out = {
        "hub.config.ConfigurableHTTPProxy.auth_token": secrets.token_hex(32),
        "hub.config.CryptKeeper.keys": secrets.token_hex(32),
        "hub.config.JupyterHub.cookie_secret": secrets.token_hex(32),
    }
    for key in values["hub"]["services"]:
        out[f"hub.services.{key}.apiToken"] = secrets.token_hex(32)
    return out


def extra_files_data(values):
    """z2jh's Secret "singleuser": each singleuser.extraFiles entry's `data`
    rendered by the extension of its mountPath (here YAML), or its stringData."""
    out = {}
    for key, f in values["singleuser"].get("extraFiles", {}).items():
        if "stringData" in f:
            out[key] = f["stringData"]
        elif f["mountPath"].endswith((".yaml", ".yml")):
            out[key] = yaml.safe_dump(f["data"], default_flow_style=False)
        elif f["mountPath"].endswith(".json"):
            out[key] = json.dumps(f["data"])
        else:
            raise ValueError(f"singleuser.extraFiles.{key}: not translated here")
    return out


def egress_allow_rules(cloud_metadata, dns_metadata, dns_kube_system, dns_private, non_private, private):
    """z2jh's jupyterhub.networkPolicy.renderEgressRules (egressAllowRules)."""
    rules = []
    if dns_metadata:
        rules.append({"ports": DNS_PORTS, "to": [{"ipBlock": {"cidr": METADATA}}]})
    if dns_kube_system:
        rules.append({"ports": DNS_PORTS, "to": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]})
    if dns_private:
        rules.append({"ports": DNS_PORTS, "to": [{"ipBlock": {"cidr": c}} for c in PRIVATE]})
    if non_private:
        rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE, METADATA]}}]})
    if private:
        rules.append({"to": [{"ipBlock": {"cidr": c}} for c in PRIVATE]})
    if cloud_metadata:
        rules.append({"to": [{"ipBlock": {"cidr": METADATA}}]})
    return rules


def network_policies(values):
    """z2jh's hub, proxy and singleuser NetworkPolicies with its default
    egressAllowRules and interNamespaceAccessLabels: ignore, the ports as
    numbers (z2jh names them: http 8081, http 8000 and api 8001, notebook-port 8888)."""
    hub, proxy, singleuser = labels("hub"), labels("proxy"), labels("singleuser-server")

    def policy(name, selector, ingress, egress):
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress", "Egress"],
                         "ingress": ingress, "egress": egress}}

    def access(what):
        return {"podSelector": {"matchLabels": {f"hub.jupyter.org/network-access-{what}": "true"}}}

    all_true = dict(cloud_metadata=True, dns_metadata=True, dns_kube_system=True, dns_private=True,
                    non_private=True, private=True)
    su = values["singleuser"].get("networkPolicy", {})
    return [
        policy("hub", hub,
               ingress=[{"ports": [{"port": 8081}], "from": [access("hub")]}],
               egress=[{"to": [{"podSelector": {"matchLabels": proxy}}], "ports": [{"port": 8001}]},
                       {"to": [{"podSelector": {"matchLabels": singleuser}}], "ports": [{"port": 8888}]},
                       *egress_allow_rules(**all_true)]),
        policy("proxy", proxy,
               ingress=[{"ports": [{"port": 8000}]},  # allowedIngressPorts [http, https]: the public port
                        {"ports": [{"port": 8000}], "from": [access("proxy-http")]},
                        {"ports": [{"port": 8001}], "from": [access("proxy-api")]}],
               egress=[{"to": [{"podSelector": {"matchLabels": hub}}], "ports": [{"port": 8081}]},
                       {"to": [{"podSelector": {"matchLabels": singleuser}}], "ports": [{"port": 8888}]},
                       *egress_allow_rules(**all_true)]),
        policy("singleuser", singleuser,
               ingress=[{"ports": [{"port": 8888}], "from": [access("singleuser")]}, *su.get("ingress", [])],
               egress=[{"to": [{"podSelector": {"matchLabels": hub}}], "ports": [{"port": 8081}]},
                       {"to": [{"podSelector": {"matchLabels": proxy}}], "ports": [{"port": 8000}]},
                       {"to": [{"podSelector": {"matchLabels": labels("autohttps")}}],
                        "ports": [{"port": 8080}, {"port": 8443}]},
                       # The recipe's rule (singleuser.networkPolicy.egress): the gateway's port.
                       *su.get("egress", []),
                       *egress_allow_rules(cloud_metadata=False, dns_metadata=True, dns_kube_system=True,
                                           dns_private=True, non_private=True, private=False)]),
    ]


def manifests(values, secret_values, hub_image, proxy_image):
    """Every object of the z2jh-like deployment, in apply order."""
    config = (Path(__file__).parent / "jupyterhub_config.py").read_text()
    secret = {**secret_values, "values.json": json.dumps(values)}
    meta = lambda name, **extra: {"name": name, "namespace": NAMESPACE, **extra}  # noqa: E731
    hub_labels = {**labels("hub"), "hub.jupyter.org/network-access-proxy-api": "true",
                  "hub.jupyter.org/network-access-proxy-http": "true",
                  "hub.jupyter.org/network-access-singleuser": "true"}
    proxy_labels = {**labels("proxy"), "hub.jupyter.org/network-access-hub": "true",
                    "hub.jupyter.org/network-access-singleuser": "true"}
    restricted = {"runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False}
    proxy_user = {"runAsUser": 65534, "runAsGroup": 65534, "allowPrivilegeEscalation": False}
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("hub")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("hub"),
         "rules": [{"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
                    "verbs": ["get", "watch", "list", "create", "delete"]},
                   {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("hub"),
         "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": NAMESPACE}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hub"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("hub"), "type": "Opaque", "stringData": secret},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("singleuser"), "type": "Opaque",
         "stringData": extra_files_data(values)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("hub"),
         "data": {"jupyterhub_config.py": config}},
        *network_policies(values),
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("hub"),
         "spec": {"selector": labels("hub"), "ports": [{"name": "hub", "port": 8081, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("proxy-api"),
         "spec": {"selector": labels("proxy"), "ports": [{"port": 8001, "targetPort": "api"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("proxy-public"),
         "spec": {"selector": labels("proxy"), "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("hub"),
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels("hub")},
                  "template": {"metadata": {"labels": hub_labels}, "spec": {
                      "serviceAccountName": "hub",
                      "securityContext": {"fsGroup": 1000},
                      "containers": [{
                          "name": "hub", "image": hub_image, "imagePullPolicy": "IfNotPresent",
                          "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py",
                                   "--upgrade-db"],
                          "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                  {"name": "HELM_RELEASE_NAME", "value": HUB_RELEASE}],
                          "ports": [{"name": "http", "containerPort": 8081}],
                          "securityContext": restricted,
                          "readinessProbe": {"httpGet": {"path": "/hub/health", "port": "http"},
                                             "periodSeconds": 2, "failureThreshold": 1000},
                          "volumeMounts": [
                              {"name": "config", "mountPath": "/usr/local/etc/jupyterhub/jupyterhub_config.py",
                               "subPath": "jupyterhub_config.py"},
                              {"name": "secret", "mountPath": "/usr/local/etc/jupyterhub/secret/"},
                              {"name": "pvc", "mountPath": "/srv/jupyterhub"}],
                      }],
                      "volumes": [{"name": "config", "configMap": {"name": "hub"}},
                                  {"name": "secret", "secret": {"secretName": "hub"}},
                                  # z2jh's hub-db-dir PVC; an emptyDir here (the tier has no storage class).
                                  {"name": "pvc", "emptyDir": {}}],
                  }}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("proxy"),
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels("proxy")},
                  "template": {"metadata": {"labels": proxy_labels}, "spec": {
                      "automountServiceAccountToken": False,
                      "containers": [{
                          "name": "chp", "image": proxy_image, "imagePullPolicy": "IfNotPresent",
                          # z2jh's proxy container, as it runs configurable-http-proxy.
                          "args": ["configurable-http-proxy", "--ip=", "--api-ip=", "--api-port=8001",
                                   "--default-target=http://hub:8081", "--error-target=http://hub:8081/hub/error",
                                   "--port=8000"],
                          "env": [{"name": "CONFIGPROXY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
                              "name": "hub", "key": "hub.config.ConfigurableHTTPProxy.auth_token"}}}],
                          "ports": [{"name": "http", "containerPort": 8000}, {"name": "api", "containerPort": 8001}],
                          "securityContext": proxy_user,
                          "readinessProbe": {"httpGet": {"path": "/_chp_healthz", "port": "http"}, "periodSeconds": 2},
                      }],
                  }}}},
    ]
    return objects
