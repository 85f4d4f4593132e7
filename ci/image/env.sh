# Shared settings for the image scripts. Sourced, never run.
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Everything lives outside the clone so a second run starts warm, and buildah
# gets its own storage so the system's containers/storage is left alone.
CACHE_DIR=${JSK8S_CACHE_DIR:-/var/cache/jupyter-scheduler-k8s}/images
ROOTFS_DIR="$CACHE_DIR/rootfs"
OUT_DIR=${JSK8S_IMAGE_OUT_DIR:-$CACHE_DIR/out}
# overlay shares layers (a build takes ~270 MB and half the time); vfs copies every layer
# (~1.6 GB) but works everywhere, e.g. when the cache itself sits on overlayfs inside a
# container. Override with JSK8S_BUILDAH_DRIVER. Each driver gets its own storage root.
default_driver() {
  mkdir -p "$CACHE_DIR"
  if grep -qw overlay /proc/filesystems && [ "$(findmnt -no FSTYPE -T "$CACHE_DIR" 2>/dev/null)" != overlay ]; then
    echo overlay
  else
    echo vfs
  fi
}
STORAGE_DRIVER=${JSK8S_BUILDAH_DRIVER:-$(default_driver)}
STORAGE_ROOT="$CACHE_DIR/buildah/$STORAGE_DRIVER/storage"
STORAGE_RUNROOT="$CACHE_DIR/buildah/$STORAGE_DRIVER/run"

BASE_IMAGE_NAME=localhost/jsk8s-base
IMAGE_NAME=localhost/jupyter-scheduler-k8s-executor
GATEWAY_IMAGE_NAME=localhost/jupyter-scheduler-k8s-gateway
USER_IMAGE_NAME=localhost/jupyter-scheduler-k8s-user
# Stand-ins for z2jh's published hub and proxy images (quay.io is out of reach here).
HUB_IMAGE_NAME=localhost/jsk8s-z2jh-hub
PROXY_IMAGE_NAME=localhost/jsk8s-z2jh-proxy
Z2JH_VERSION=4.4.0
CHP_VERSION=5.2.0   # z2jh 4.4.0's proxy.chp.image.tag

# CA bundle that pip in the build must trust (the host's, which includes any
# intercepting proxy's CA). Passed as a build secret only.
PIP_CA=${JSK8S_PIP_CA:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

bh() {
  buildah --root "$STORAGE_ROOT" --runroot "$STORAGE_RUNROOT" --storage-driver "$STORAGE_DRIVER" "$@"
}

executor_version() {
  python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$REPO_DIR/image/executor/pyproject.toml"
}

# The version of this package (the gateway image's tag, and the chart's appVersion).
package_version() {
  sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO_DIR/jupyter_scheduler_k8s/__init__.py"
}

# The Debian mirror apt is configured with (deb822 or one-line format), never a
# hard-coded host: these machines reach Debian only through their own mirror.
debian_mirror() {
  if [ -n "${JSK8S_DEBIAN_MIRROR:-}" ]; then echo "$JSK8S_DEBIAN_MIRROR"; return; fi
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -f "$f" ]; then
    # First URI of a stanza whose Suites include plain "bookworm" (not -security).
    awk 'BEGIN{RS=""} /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ {
           if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { s = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", s); print s; exit } }' "$f" \
      | grep . && return
  fi
  awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null | grep .
}

# JupyterHub's chart (z2jh), vendored beside the workspace for tests: JSK8S_Z2JH_DIR, else
# ../shared/vendor next to the checkout, else /work/shared/vendor.
z2jh_dir() {
  local d
  for d in "${JSK8S_Z2JH_DIR:-}" "$REPO_DIR/../shared/vendor/z2jh-$Z2JH_VERSION" "/work/shared/vendor/z2jh-$Z2JH_VERSION"; do
    [ -n "$d" ] && [ -f "$d/jupyterhub/Chart.yaml" ] && { (cd "$d" && pwd); return; }
  done
  die "z2jh $Z2JH_VERSION not found: set JSK8S_Z2JH_DIR to the folder holding jupyterhub/Chart.yaml"
}

# The version z2jh's hub image pins for a package (the user image's JupyterHub matches the hub's).
z2jh_pin() {
  sed -n "s/^$1==\([^ ]*\).*/\1/p" "$(z2jh_dir)/images/hub/requirements.txt" | grep . \
    || die "$1 is not pinned in z2jh's hub requirements"
}

# configurable-http-proxy and its dependencies (plain JavaScript) from the npm registry, installed
# once with this machine's npm and cached; the proxy image copies them onto Debian's Node.js.
chp_modules() {
  local dir="$CACHE_DIR/npm/configurable-http-proxy-$CHP_VERSION"
  if [ ! -e "$dir/.jsk8s-complete" ]; then
    command -v npm >/dev/null || die "missing npm (for configurable-http-proxy)"
    log "proxy: npm install configurable-http-proxy@$CHP_VERSION"
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    (cd "$dir.tmp" && npm install --omit=dev --no-save --no-package-lock --ignore-scripts --no-audit --no-fund \
       "configurable-http-proxy@$CHP_VERSION" >&2)
    rm -f "$dir.tmp/node_modules/.package-lock.json"
    touch "$dir.tmp/.jsk8s-complete"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  echo "$dir/node_modules"
}
