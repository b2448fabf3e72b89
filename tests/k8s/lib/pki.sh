# shellcheck shell=bash
# Test PKI: one CA, the API server's serving certificate, client certificates
# (admin, components, and any user minted later), and the service-account keys.
# Sourced by tests/k8s/cluster; expects STATE and API_PORT.

PKI=$STATE/pki

# sign_client NAME CN [GROUP...]: a client certificate for CN in the given groups.
sign_client() {
  local name=$1 cn=$2; shift 2
  local subj="/CN=$cn" g
  for g in "$@"; do subj="$subj/O=$g"; done
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -extfile <(printf 'extendedKeyUsage=clientAuth\n') -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

# write_kubeconfig FILE CERTNAME: a kubeconfig that authenticates with that client cert.
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dask-rs-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: dask-rs-test
  context: {cluster: dask-rs-test, user: $2, namespace: default}
current-context: dask-rs-test
EOF
}

make_pki() {
  [ -f "$PKI/.complete" ] && return 0
  mkdir -p "$PKI"
  # keyUsage as real cluster CAs have it: Python >= 3.13 (VERIFY_X509_STRICT,
  # e.g. KubeSpawner's client in a pod) refuses a CA without it.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=dask-rs-test-ca" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/apiserver.key" -subj "/CN=kube-apiserver" -out "$PKI/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 30 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.88.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' "$SERVICE_IP") \
    -out "$PKI/apiserver.crt" 2>/dev/null
  rm -f "$PKI/apiserver.csr"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  sign_client admin admin system:masters
  sign_client controller-manager system:kube-controller-manager
  sign_client scheduler system:kube-scheduler
  sign_client apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  sign_client kwok kwok system:masters
  sign_client kubelet system:node:dask-rs-node system:nodes
  sign_client kube-proxy system:kube-proxy
  sign_client coredns coredns system:masters
  local c
  for c in admin controller-manager scheduler kwok kubelet kube-proxy coredns; do write_kubeconfig "$STATE/$c.kubeconfig" "$c"; done
  touch "$PKI/.complete"
}

# mint_user NAME [GROUP...]: a non-admin identity; prints its kubeconfig's path.
mint_user() {
  local name=$1; shift
  [[ $name =~ ^[a-z0-9][a-z0-9.-]*$ ]] || die "user name must be lower-case DNS-like: $name"
  mkdir -p "$STATE/users"
  sign_client "user-$name" "$name" "$@"
  write_kubeconfig "$STATE/users/$name.kubeconfig" "user-$name"
  echo "$STATE/users/$name.kubeconfig"
}
