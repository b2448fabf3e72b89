"""NetworkPolicies are enforced in the `pods` tier (kube-network-policies, see
tests/k8s/cluster): a server pod, a client pod with the allowed label and one
without. Without a policy both connect; with a default-deny-ingress policy and
one that admits the label, only the labelled client does (the other one's
packets are dropped: it times out); an egress policy stops the labelled client
too; and with the policies gone both connect again.

The test also measures how soon a policy takes effect: the agent puts the IPs of
the pods a policy selects into an nftables set, read here with `nft` (the test
runs in the tier's network namespace, as root)."""

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from testlib import poll

BUSYBOX = "dask-rs.local/busybox:1"
TABLE = "kube-network-policies"


def agent_running():
    state = Path(os.environ.get("KUBECONFIG", "")).parent
    try:
        pid = int((state / "pids" / f"{TABLE}.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


pytestmark = pytest.mark.skipif(
    not agent_running(), reason="kube-network-policies is not running (KUBE_NETWORK_POLICIES=0?)")


def policed_ips():
    """The pod IPs the agent currently sends to its nfqueue."""
    out = subprocess.run(["nft", "-j", "list", "set", "inet", TABLE, "podips-v4"],
                         capture_output=True, text=True, check=True).stdout
    for item in json.loads(out)["nftables"]:
        if "set" in item:
            return set(item["set"].get("elem", []))
    return set()


def drops():
    """Packets the agent has dropped so far (its Prometheus metrics)."""
    port = os.environ.get("KNP_METRICS_PORT", "20246")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(v) for v in re.findall(r'^kube_network_policies_packet_count\{[^}]*verdict="drop"[^}]*\} (\S+)$',
                                             text, re.M))


def pod(name, labels, command, probe=None):
    spec = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", command],
                            **({"readinessProbe": probe} if probe else {})}],
        },
    }
    return json.dumps(spec)


def policy(name, spec):
    return json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": name}, "spec": spec})


@pytest.fixture
def pods(kubectl, namespace):
    """A web server and two idle clients, `allowed` (role=client) and `other`."""
    kubectl("-n", namespace, "apply", "-f", "-", input=pod(
        "web", {"app": "web"},
        "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www",
        probe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}))
    kubectl("-n", namespace, "apply", "-f", "-", input=pod("allowed", {"role": "client"}, "exec sleep 3600"))
    kubectl("-n", namespace, "apply", "-f", "-", input=pod("other", {}, "exec sleep 3600"))
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/web", "pod/allowed", "pod/other", "--timeout=90s")
    ip = kubectl("-n", namespace, "get", "pod", "web", "-o", "jsonpath={.status.podIP}").strip()
    assert ip
    return ip


def fetch(kubectl, namespace, client, ip, timeout=3):
    """Whether `client` gets the page of the web pod at `ip` within `timeout` seconds."""
    proc = kubectl.run("-n", namespace, "exec", client, "--",
                       # Not wget's -T: busybox 1.35's wget crashes with it.
                       "busybox", "timeout", str(timeout), "wget", "-q", "-O", "-",
                       f"http://{ip}:8080/", check=False)
    if proc.returncode == 0:
        assert proc.stdout.strip() == "web", proc.stdout
        return True
    return False


def apply_and_time(kubectl, namespace, manifest, web_ip, expect_policed=True):
    """Applies a policy; returns how long until the agent polices the web pod's IP."""
    t0 = time.monotonic()
    kubectl("-n", namespace, "apply", "-f", "-", input=manifest)
    poll(lambda: (web_ip in policed_ips()) == expect_policed, 30, "the agent to update its set of policed pods",
         interval=0.02)
    return time.monotonic() - t0


def test_policies_are_enforced(kubectl, namespace, pods):
    web_ip = pods
    # No policy: everyone connects, and the agent leaves these pods alone.
    assert web_ip not in policed_ips()
    assert fetch(kubectl, namespace, "allowed", web_ip)
    assert fetch(kubectl, namespace, "other", web_ip)

    # Default deny for ingress, then port 8080 from role=client only.
    deny = policy("default-deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
    apply_s = apply_and_time(kubectl, namespace, deny, web_ip)
    allow = policy("allow-clients", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                     "ports": [{"port": 8080, "protocol": "TCP"}]}],
    })
    kubectl("-n", namespace, "apply", "-f", "-", input=allow)
    t0 = time.monotonic()
    # The allowed client's first connection after the policy: the agent
    # already has the policy in its informer cache when the set changed.
    assert fetch(kubectl, namespace, "allowed", web_ip)
    allowed_s = time.monotonic() - t0
    dropped, t0 = drops(), time.monotonic()
    assert not fetch(kubectl, namespace, "other", web_ip), "a client without the label got through"
    denied_s = time.monotonic() - t0
    # Dropped by the agent (its verdict), not refused: the client timed out.
    assert drops() > dropped
    assert denied_s >= 2.5, f"the denied client failed in {denied_s:.1f}s: refused, not dropped?"
    # Still true on a second try (not a race with the agent's start-up).
    assert fetch(kubectl, namespace, "allowed", web_ip)

    # Egress: the allowed client may send nothing at all.
    no_egress = policy("clients-no-egress", {
        "podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"], "egress": []})
    kubectl("-n", namespace, "apply", "-f", "-", input=no_egress)
    allowed_ip = kubectl("-n", namespace, "get", "pod", "allowed", "-o", "jsonpath={.status.podIP}").strip()
    poll(lambda: allowed_ip in policed_ips(), 30, "the agent to police the client's IP", interval=0.02)
    dropped = drops()
    assert not fetch(kubectl, namespace, "allowed", web_ip), "the egress policy let the client out"
    assert drops() > dropped

    # Policies gone: open again.
    t0 = time.monotonic()
    kubectl("-n", namespace, "delete", "networkpolicy", "--all")
    poll(lambda: not ({web_ip, allowed_ip} & policed_ips()), 30, "the agent to forget the pods", interval=0.02)
    removal_s = time.monotonic() - t0
    assert fetch(kubectl, namespace, "allowed", web_ip)
    assert fetch(kubectl, namespace, "other", web_ip)
    print(f"\nnetwork policy timings: policy applied (IP policed) {apply_s * 1000:.0f} ms after "
          f"`kubectl apply` began; allowed fetch {allowed_s:.2f}s; denied fetch timed out after "
          f"{denied_s:.2f}s; policies removed in {removal_s * 1000:.0f} ms")
