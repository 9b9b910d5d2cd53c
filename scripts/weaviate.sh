#!/usr/bin/env bash
# A local Weaviate server on loopback, built from its Go module on first use.
#
#   scripts/weaviate.sh start [--data DIR] [--api-key KEY]   build if needed, start, wait until ready
#   scripts/weaviate.sh url   [--data DIR]                   the running server's lines
#   scripts/weaviate.sh stop  [--data DIR]                   stop it (no-op when not running)
#
# stdout carries only eval-able KEY=value lines:
#   WEAVIATE_URL=http://127.0.0.1:PORT
#   EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL=127.0.0.1:PORT
#   WEAVIATE_API_KEY=KEY                  (only with --api-key)
# Progress and errors go to stderr. `eval "$(scripts/weaviate.sh start)"` sets up a shell.
#
# Without --data, the server keeps its state in a fresh folder each time it starts (under the
# cache below). With --data DIR, the data lives in DIR/data and the server keeps the ports it was
# first given (DIR/weaviate.env), so stopping, killing and starting it again finds its data at
# the same address. Every listener (HTTP, gRPC, gossip, cluster data, Raft, Raft RPC) gets a free
# port, so several instances run side by side. Telemetry is off, no vectorizer module is loaded
# (expertbot brings its own vectors), access is anonymous unless --api-key is given. A second
# `start` of a running instance prints its lines and changes nothing. HTTP, gossip and Raft bind
# to 127.0.0.1; Weaviate has no setting to bind its gRPC and cluster-data ports to one address,
# so those two listen on every interface: on a shared network, firewall them or use --api-key.
#
# The server binary is built with `go install` (Go >= 1.26, cgo with gcc) into
# ${XDG_CACHE_HOME:-~/.cache}/expertbot/weaviate/VERSION, outside the repository;
# the first build takes several minutes, later starts take seconds. The version is pinned here
# and in deploy/ (compose, Helm); WEAVIATE_VERSION overrides it.
set -euo pipefail

WEAVIATE_VERSION="${WEAVIATE_VERSION:-v1.39.3}"
MODULE="github.com/weaviate/weaviate/cmd/weaviate-server"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/expertbot"
BIN_DIR="$CACHE/weaviate/$WEAVIATE_VERSION"
BIN="$BIN_DIR/weaviate-server"
READY_TIMEOUT_S="${WEAVIATE_READY_TIMEOUT_S:-90}"

say() { echo "weaviate.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() { die "usage: scripts/weaviate.sh start|stop|url [--data DIR] [--api-key KEY]"; }

cmd="${1:-}"
[[ -n "$cmd" ]] || usage
shift
DATA=""
API_KEY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) [[ $# -ge 2 ]] || usage; DATA="$2"; shift 2 ;;
    --api-key) [[ $# -ge 2 && -n "$2" ]] || usage; API_KEY="$2"; shift 2 ;;
    *) usage ;;
  esac
done

if [[ -n "$DATA" ]]; then
  mkdir -p "$DATA"
  HOME_DIR="$(cd "$DATA" && pwd)"
  FRESH=0
else
  HOME_DIR="$CACHE/weaviate/default"
  FRESH=1
fi
STATE="$HOME_DIR/weaviate.env"   # ports and key of this instance
PIDFILE="$HOME_DIR/weaviate.pid"
LOG="$HOME_DIR/weaviate.log"

# Alive: the process exists and is not a zombie (killed, but not yet reaped by its new parent).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}
pid_alive() { [[ -f "$PIDFILE" ]] && alive "$(cat "$PIDFILE")"; }

load_state() {
  # shellcheck disable=SC1090
  [[ -f "$STATE" ]] && . "$STATE"
  return 0
}

is_ready() {
  python3 - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/.well-known/ready", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

print_lines() {
  echo "WEAVIATE_URL=http://127.0.0.1:$HTTP_PORT"
  echo "EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL=127.0.0.1:$GRPC_PORT"
  if [[ -n "${STATE_API_KEY:-}" ]]; then echo "WEAVIATE_API_KEY=$STATE_API_KEY"; fi
}

free_ports() {
  # n distinct ports the kernel calls free now (held open together, so they differ).
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

build() {
  [[ -x "$BIN" ]] && return 0
  if ! command -v go >/dev/null 2>&1; then
    die "Go is not installed: building weaviate-server $WEAVIATE_VERSION needs Go >= 1.26 and gcc (https://go.dev/dl), or set WEAVIATE_URL to a running Weaviate"
  fi
  command -v gcc >/dev/null 2>&1 || die "gcc is not installed: weaviate-server needs cgo to build"
  mkdir -p "$BIN_DIR"
  local tmp
  tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
  say "building weaviate-server $WEAVIATE_VERSION with $(go version | cut -d' ' -f3) (first use: several minutes)…"
  if ! GOBIN="$tmp" CGO_ENABLED=1 GOFLAGS="${GOFLAGS:-} -trimpath" go install "$MODULE@$WEAVIATE_VERSION" >&2; then
    rm -rf "$tmp"
    die "building weaviate-server $WEAVIATE_VERSION failed (see the go output above)"
  fi
  mv "$tmp/weaviate-server" "$BIN"
  rm -rf "$tmp"
  say "built $BIN"
}

stop_instance() {
  if pid_alive; then
    local pid
    pid="$(cat "$PIDFILE")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      say "weaviate-server (pid $pid) did not stop in 10 s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped weaviate-server (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

start_instance() {
  build
  mkdir -p "$HOME_DIR"
  if pid_alive; then
    load_state
    if [[ -n "$API_KEY" && "$API_KEY" != "${STATE_API_KEY:-}" ]]; then
      die "a server is already running in $HOME_DIR with another API-key setting; stop it first"
    fi
    if is_ready "$HTTP_PORT"; then
      say "already running (pid $(cat "$PIDFILE")) at http://127.0.0.1:$HTTP_PORT"
      print_lines
      return 0
    fi
  else
    rm -f "$PIDFILE"
    if [[ "$FRESH" == 1 ]]; then
      rm -rf "$HOME_DIR/data" "$STATE"
    fi
    load_state
    if [[ -z "${HTTP_PORT:-}" ]]; then
      read -r HTTP_PORT GRPC_PORT GOSSIP_PORT DATA_PORT RAFT_PORT RAFT_RPC_PORT <<<"$(free_ports 6)"
      STATE_API_KEY="$API_KEY"
      {
        echo "HTTP_PORT=$HTTP_PORT GRPC_PORT=$GRPC_PORT GOSSIP_PORT=$GOSSIP_PORT DATA_PORT=$DATA_PORT"
        echo "RAFT_PORT=$RAFT_PORT RAFT_RPC_PORT=$RAFT_RPC_PORT"
        printf 'STATE_API_KEY=%q\n' "$STATE_API_KEY"
      } >"$STATE"
      chmod 600 "$STATE"
    elif [[ -n "$API_KEY" ]]; then
      STATE_API_KEY="$API_KEY"
      sed -i '/^STATE_API_KEY=/d' "$STATE"
      printf 'STATE_API_KEY=%q\n' "$STATE_API_KEY" >>"$STATE"
    fi
    local auth=(AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true)
    if [[ -n "${STATE_API_KEY:-}" ]]; then
      auth=(
        AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=false
        AUTHENTICATION_APIKEY_ENABLED=true
        AUTHENTICATION_APIKEY_ALLOWED_KEYS="$STATE_API_KEY"
        AUTHENTICATION_APIKEY_USERS=expertbot
      )
    fi
    mkdir -p "$HOME_DIR/data"
    say "starting weaviate-server $WEAVIATE_VERSION on 127.0.0.1:$HTTP_PORT (gRPC $GRPC_PORT), data in $HOME_DIR/data"
    # setsid: the server outlives this script and the shell that ran it; 9>&-: it must not
    # inherit (and so hold) this instance's start lock.
    env "${auth[@]}" \
      PERSISTENCE_DATA_PATH="$HOME_DIR/data" \
      DEFAULT_VECTORIZER_MODULE=none \
      ENABLE_MODULES= \
      DISABLE_TELEMETRY=true \
      GO_PROFILING_DISABLE=true \
      PROMETHEUS_MONITORING_ENABLED=false \
      GRPC_PORT="$GRPC_PORT" \
      CLUSTER_HOSTNAME=node1 \
      CLUSTER_BIND_ADDR=127.0.0.1 \
      CLUSTER_ADVERTISE_ADDR=127.0.0.1 \
      CLUSTER_GOSSIP_BIND_PORT="$GOSSIP_PORT" \
      CLUSTER_DATA_BIND_PORT="$DATA_PORT" \
      RAFT_PORT="$RAFT_PORT" \
      RAFT_INTERNAL_RPC_PORT="$RAFT_RPC_PORT" \
      RAFT_BOOTSTRAP_EXPECT=1 \
      LOG_LEVEL="${WEAVIATE_LOG_LEVEL:-warning}" \
      setsid "$BIN" --host 127.0.0.1 --port "$HTTP_PORT" --scheme http \
      >>"$LOG" 2>&1 </dev/null 9>&- &
    echo $! >"$PIDFILE"
  fi
  local began=$SECONDS
  until is_ready "$HTTP_PORT"; do
    if ! pid_alive; then
      say "weaviate-server exited during start-up; the end of $LOG:"
      tail -n 20 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if ((SECONDS - began >= READY_TIMEOUT_S)); then
      die "weaviate-server did not become ready in ${READY_TIMEOUT_S} s (log: $LOG)"
    fi
    sleep 0.2
  done
  say "ready (pid $(cat "$PIDFILE")) after $((SECONDS - began)) s"
  print_lines
}

case "$cmd" in
  start)
    mkdir -p "$HOME_DIR"
    # One start at a time per instance (and so one build at a time for it).
    exec 9>"$HOME_DIR/.lock"
    flock 9
    start_instance
    ;;
  url)
    load_state
    if pid_alive && [[ -n "${HTTP_PORT:-}" ]] && is_ready "$HTTP_PORT"; then
      print_lines
    else
      die "no Weaviate is running for $HOME_DIR (scripts/weaviate.sh start)"
    fi
    ;;
  stop)
    if [[ -d "$HOME_DIR" ]]; then
      exec 9>"$HOME_DIR/.lock"
      flock 9
      stop_instance
    fi
    ;;
  *) usage ;;
esac
