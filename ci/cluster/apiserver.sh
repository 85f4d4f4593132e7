# kube-apiserver's command line, shared by `up` and `restart-apiserver`. Sourced after env.sh and lib.sh.

start_apiserver() {
  local s=$STATE_DIR b=$BIN_DIR
  start_component kube-apiserver "$b/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --client-ca-file "$s/pki/ca.crt" --tls-cert-file "$s/pki/apiserver.crt" --tls-private-key-file "$s/pki/apiserver.key" \
    --kubelet-client-certificate "$s/pki/apiserver-kubelet-client.crt" --kubelet-client-key "$s/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$s/pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$s/pki/sa.pub" --service-account-signing-key-file "$s/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false
  wait_for kube-apiserver 90 kubectl_ get --raw /readyz
}
