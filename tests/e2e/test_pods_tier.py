"""The `pods` tier runs real containers: a pod serves HTTP, another pod reaches
it through its Service's DNS name (CoreDNS + kube-proxy), and the kubelet
serves container logs. Runs inside the tier's network namespace
(`tests/k8s/cluster exec pytest tests/e2e`)."""

BUSYBOX = "dask-rs.local/busybox:1"


def test_pod_reaches_a_service_by_dns_name(kubectl, namespace):
    kubectl("-n", namespace, "apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  containers:
  - name: web
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www"]
    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
""")
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/web", "--timeout=90s")
    kubectl("-n", namespace, "run", "client", f"--image={BUSYBOX}", "--image-pull-policy=Never",
            "--restart=Never", "--command", "--",
            "wget", "-qO-", f"http://web.{namespace}.svc.cluster.local/")
    kubectl("-n", namespace, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/client", "--timeout=90s")
    # The page is the serving pod's hostname: the bytes really crossed pods.
    assert kubectl("-n", namespace, "logs", "client").strip() == "web"
