# Tiny images made by hand from Debian's static binaries, as docker-archive tarballs that
# `ctr images import` accepts. Sourced by up and test-image.

# docker_archive NAME ROOTFS_DIR OUT_TAR ENTRYPOINT_JSON [USER]
docker_archive() {
  local name=$1 rootfs=$2 out=$3 entrypoint=$4 user=${5:-}
  local w; w=$(mktemp -d)
  tar -C "$rootfs" --owner=0 --group=0 --numeric-owner -cf "$w/layer.tar" .
  local diff; diff=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
  cat > "$w/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Entrypoint":$entrypoint,"User":"$user","Env":["PATH=/bin"]},
 "rootfs":{"type":"layers","diff_ids":["sha256:$diff"]},"history":[{"created_by":"jupyter-scheduler-k8s ci/cluster"}]}
JSON
  printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$name" > "$w/manifest.json"
  mkdir -p "$(dirname "$out")"
  tar -C "$w" -cf "$out.tmp" manifest.json config.json layer.tar && mv "$out.tmp" "$out"
  rm -rf "$w"
}

# The pause image, from Debian's static catatonit: it sleeps, reaps children and exits on TERM.
pause_image_tar() {
  local out="$CACHE_DIR/images/pause-catatonit.tar"
  if [ ! -f "$out" ]; then
    local r; r=$(mktemp -d)
    install -m 0755 "$(command -v catatonit)" "$r/pause"
    docker_archive "$PAUSE_IMAGE" "$r" "$out" '["/pause","-P"]' 65535:65535
    rm -rf "$r"
  fi
  echo "$out"
}

# A busybox image for the cluster's smoke tests (sh, tar, wget with TLS).
BUSYBOX_IMAGE=localhost/jsk8s-busybox:1.35
busybox_image_tar() {
  local out="$CACHE_DIR/images/busybox.tar"
  if [ ! -f "$out" ]; then
    command -v busybox >/dev/null || apt-get install -y -qq busybox-static >/dev/null
    local r; r=$(mktemp -d)
    mkdir -p "$r/bin" "$r/tmp" && chmod 1777 "$r/tmp"
    install -m 0755 "$(command -v busybox)" "$r/bin/busybox"
    for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
    docker_archive "$BUSYBOX_IMAGE" "$r" "$out" '["/bin/sh"]'
    rm -rf "$r"
  fi
  echo "$out"
}
