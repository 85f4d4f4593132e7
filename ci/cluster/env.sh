# Shared settings for the local cluster scripts. Sourced, never run.
# Versions are pinned here; the binary cache is keyed by them.
K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v1.7.35}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
CT_VERSION=${CT_VERSION:-v3.14.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}

# Built binaries live outside the clone so a second run starts warm.
CACHE_DIR=${JSK8S_CACHE_DIR:-/var/cache/jupyter-scheduler-k8s}
BIN_DIR="$CACHE_DIR/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-containerd-$CONTAINERD_VERSION"
TOOLS_DIR="$CACHE_DIR/bin/helm-$HELM_VERSION-ct-$CT_VERSION"
DNS_BIN_DIR="$CACHE_DIR/bin/coredns-$COREDNS_VERSION"

# Runtime state of one cluster: certs, etcd data, logs, pid files, kubeconfig.
STATE_DIR=${JSK8S_STATE_DIR:-/var/lib/jupyter-scheduler-k8s/cluster}
KUBECONFIG_OUT="$STATE_DIR/kubeconfig"
NODE_NAME=${JSK8S_NODE_NAME:-jsk8s-node}
CONTEXT_NAME=jsk8s-local

# Ports on loopback. Chosen away from the defaults so a stray cluster on the
# usual ports is never touched.
APISERVER_PORT=${JSK8S_APISERVER_PORT:-16443}
# The node address (a /32 on lo) lets pods (through the `kubernetes` service) and the host
# reach the same API server, and nothing binds to eth0.
NODE_IP=${JSK8S_NODE_IP:-10.200.0.1}
ETCD_CLIENT_PORT=${JSK8S_ETCD_PORT:-12379}
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))
KUBELET_PORT=${JSK8S_KUBELET_PORT:-10250}

POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16

PAUSE_IMAGE=localhost/jsk8s-pause:3.10
CONTAINERD_SOCK="$STATE_DIR/containerd/containerd.sock"
CNI_BIN_DIR=/usr/lib/cni

# The cluster's DNS (CoreDNS, a process like the rest) answers on the node address, port 53:
# kubelet hands pods that address as their nameserver. Only cluster names are served.
DNS_HEALTH_PORT=${JSK8S_DNS_HEALTH_PORT:-18180}

# Every component under up/down, in start order.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy provisioner coredns)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }
