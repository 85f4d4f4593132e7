# Certificates for the local cluster, made with openssl. Sourced by up.
# One CA signs everything; client identities follow the names the Node and RBAC
# authorizers expect (system:node:<name> in system:nodes, system:kube-*).

pki_cert() {  # name CN O [SANs]
  local name=$1 cn=$2 org=$3 sans=${4:-}
  local d="$STATE_DIR/pki"
  [ -f "$d/$name.crt" ] && return
  local subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$d/$name.key" -subj "$subj" -out "$d/$name.csr" 2>/dev/null
  local ext="$d/$name.ext"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi; } > "$ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$d/$name.crt" 2>/dev/null
  rm -f "$d/$name.csr" "$d/$name.ext"
}

make_pki() {
  local d="$STATE_DIR/pki"
  mkdir -p "$d" && chmod 700 "$d"
  if [ ! -f "$d/ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$d/ca.key" -subj "/CN=jsk8s-local-ca" \
      -days 365 -sha256 -out "$d/ca.crt" 2>/dev/null
  fi
  local first_svc_ip; first_svc_ip=$(python3 -c "import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1])[1])" "$SERVICE_CIDR")
  pki_cert apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$first_svc_ip"
  pki_cert kubelet-serving "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
  pki_cert admin jsk8s-admin system:masters
  pki_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  pki_cert controller-manager system:kube-controller-manager ""
  pki_cert scheduler system:kube-scheduler ""
  pki_cert kubelet "system:node:$NODE_NAME" system:nodes
  pki_cert kube-proxy system:kube-proxy ""
  pki_cert provisioner jsk8s-provisioner system:masters
  pki_cert coredns system:jsk8s-coredns ""
  [ -f "$d/sa.key" ] || { openssl genrsa -out "$d/sa.key" 2048 2>/dev/null; openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null; }
}

make_kubeconfig() {  # out user
  local out=$1 user=$2 d="$STATE_DIR/pki"
  cat > "$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: $CONTEXT_NAME
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$d/$user.crt")
    client-key-data: $(base64 -w0 "$d/$user.key")
contexts:
- name: $CONTEXT_NAME
  context: {cluster: $CONTEXT_NAME, user: $user}
current-context: $CONTEXT_NAME
KC
  chmod 600 "$out"
}
