# Process bookkeeping for up/down/status. Sourced after env.sh.
# A pid file holds "PID STARTTIME": the start time (field 22 of /proc/PID/stat)
# guards against pid reuse, so we never signal a process we did not start.

PID_DIR="$STATE_DIR/pids"
LOG_DIR="$STATE_DIR/logs"

# A zombie (state Z) counts as gone: PID 1 here may be slow to reap orphans.
proc_starttime() { awk '$3 != "Z" {print $22}' "/proc/$1/stat" 2>/dev/null; }

# Prints the pid of a component if the process recorded for it is still ours and alive.
component_pid() {
  local f="$PID_DIR/$1.pid" pid start
  [ -f "$f" ] || return 1
  read -r pid start < "$f" || return 1
  [ -n "$pid" ] && [ "$(proc_starttime "$pid")" = "$start" ] || return 1
  echo "$pid"
}

start_component() {
  local name=$1; shift
  mkdir -p "$PID_DIR" "$LOG_DIR"
  log "starting $name"
  # setsid: the component outlives this script and gets its own process group.
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  local pid=$!
  sleep 0.1
  echo "$pid $(proc_starttime "$pid")" > "$PID_DIR/$name.pid"
}

stop_component() {
  local name=$1 pid
  if pid=$(component_pid "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop on TERM; killing pid $pid"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped $name (pid $pid)"
  elif [ -f "$PID_DIR/$name.pid" ]; then
    log "$name: stale pid file (process gone or pid reused); removing it"
  fi
  rm -f "$PID_DIR/$name.pid"
}

fail_component() {
  local name=$1 why=$2
  printf '[cluster] ERROR: %s failed to start: %s\n[cluster] last lines of %s:\n' "$name" "$why" "$LOG_DIR/$name.log" >&2
  tail -n 25 "$LOG_DIR/$name.log" >&2 || true
  exit 1
}

# wait_for NAME SECONDS CMD...: poll CMD until it succeeds, failing with NAME's log tail.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    component_pid "$name" >/dev/null || fail_component "$name" "process exited"
    [ $SECONDS -lt $deadline ] || fail_component "$name" "not healthy after ${secs}s"
    sleep 0.3
  done
}

port_owner() { ss -Htlnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\("[^"]*"\).*/\1/p' | head -1; }

kubectl_() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_OUT" "$@"; }
