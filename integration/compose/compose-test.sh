#!/usr/bin/env bash
# compose-test.sh — the docker-compose NAT lab end to end (`make compose-test`).
#
# Builds our static binaries and the FROM-scratch image, brings up
# docker-compose.yml (hub + bootstrap on a WAN, two nodes behind NAT routers
# of types NAT_A / NAT_B) running the real `a2al-node run`, waits until
# node_a has connected to node_b (punching if needed), checks that a DHT
# FIND_NODE between them then rides the punched Mode B connection, prints the
# outcome and always tears everything down. Exit status: 0 on success.
#
# Env: NAT_A, NAT_B (router types, default port-restricted), TIMEOUT (s, 180),
#      KEEP=1 (leave the topology up for poking), COMPOSE (override the
#      compose command). Starts dockerd (vfs storage) itself if none runs.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PROJECT="a2allab$$"
TIMEOUT="${TIMEOUT:-180}"
export NAT_A="${NAT_A:-port-restricted}" NAT_B="${NAT_B:-port-restricted}"
IMAGE=a2al-lab:local
STARTED_DOCKERD=""

log() { printf 'compose-test: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

command -v docker >/dev/null || die "docker not installed (.ci/install-lab-deps.sh installs docker.io and docker-compose)"

# --- dockerd ---------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || die "no running docker daemon and no dockerd to start"
  [ "$(id -u)" = 0 ] || die "no running docker daemon; start one or run as root"
  log "starting dockerd (vfs storage)"
  # --bridge=none: the lab only uses its own compose networks, so no docker0
  dockerd --storage-driver=vfs --bridge=none >"${TMPDIR:-/tmp}/compose-test-dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not come up; see ${TMPDIR:-/tmp}/compose-test-dockerd.log"
fi

# --- compose command (v2 plugin preferred, v1 binary accepted) --------------
if [ -n "${COMPOSE:-}" ]; then
  read -r -a DC <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  DC=(docker compose)
elif command -v docker-compose >/dev/null; then
  DC=(docker-compose)
else
  die "neither 'docker compose' nor docker-compose is installed"
fi
DC+=(-p "$PROJECT" -f "$ROOT/docker-compose.yml")

cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] || [ -n "${SHOW_LOGS:-}" ]; then
    log "logs (tail):"
    "${DC[@]}" logs --no-color --tail=40 2>&1 | sed 's/^/  /' >&2 || true
  fi
  if [ -z "${KEEP:-}" ]; then
    "${DC[@]}" down -v -t 3 --remove-orphans >/dev/null 2>&1 || true
  else
    log "KEEP=1: leaving project $PROJECT up ('${DC[*]} down -v' to remove)"
  fi
  if [ -n "$STARTED_DOCKERD" ]; then
    kill "$STARTED_DOCKERD" 2>/dev/null || true
    wait "$STARTED_DOCKERD" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------
BIN="$ROOT/integration/compose/bin"
mkdir -p "$BIN"
log "building static binaries"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$BIN/" \
  ./cmd/a2al-node ./cmd/signal-hub ./integration/compose/cmd/natrouter
log "building image $IMAGE (FROM scratch)"
docker build -q -t "$IMAGE" "$ROOT/integration/compose" >/dev/null 2>&1 || die "docker build failed"

# --- up ------------------------------------------------------------------------
log "up: node_a behind $NAT_A, node_b behind $NAT_B"
"${DC[@]}" up -d >/dev/null 2>&1 || die "compose up failed"

# dexec SERVICE CMD... runs a command in a service container.
dexec() { local s=$1; shift; "${DC[@]}" exec -T "$s" "$@"; }
# debug SERVICE PATH fetches a node's control/debug endpoint from inside its
# container (the API listens on the container's loopback only).
debug() { dexec "$1" natrouter get --timeout 3s "http://127.0.0.1:8080$2"; }

# Fail fast when a container died (e.g. a router that could not program nftables).
check_alive() {
  local dead
  dead=$("${DC[@]}" ps --services --filter status=exited 2>/dev/null || true)
  [ -z "$dead" ] || die "containers exited: $dead"
}

deadline=$((SECONDS + TIMEOUT))
wait_for() { # wait_for DESCRIPTION COMMAND...
  local what=$1; shift
  until "$@" >/dev/null 2>&1; do
    check_alive
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what"
    sleep 2
  done
  log "ok: $what"
}

# shellcheck source=integration/compose/node-api.sh
. "$ROOT/integration/compose/node-api.sh"

wait_for "node_a control endpoint" debug node_a /api/status
wait_for "node_b control endpoint" debug node_b /api/status
ADDR_B=$(node_address node_b)
[ -n "$ADDR_B" ] || die "cannot read node_b's address"
log "node_b address: $ADDR_B"
wait_for "node_a NAT classified" node_nat_known node_a
wait_for "node_b NAT classified" node_nat_known node_b
wait_for "node_a published" node_published node_a
wait_for "node_b published" node_published node_b

log "node_a -> node_b: punching"
OUT=""
until OUT=$(punch node_a "$ADDR_B" 2>&1); do
  check_alive
  [ $SECONDS -lt $deadline ] || die "punch never succeeded; last output: $OUT"
  sleep 3
done
DHT=$(dht_transport node_a "$ADDR_B")
printf '\n%-10s %-20s %-20s %-50s %s\n' pair "NAT a" "NAT b" "result (punch time, remote, path, candidates)" "FIND_NODE a->b"
printf '%-10s %-20s %-20s %-50s %s\n' "a->b" "$(node_nat node_a)" "$(node_nat node_b)" "$OUT" "$DHT"
case "$OUT" in
  *" punched "*) [ "$DHT" = modeB ] || die "after the punch, FIND_NODE a->b went over '$DHT', want the Mode B connection" ;;
esac
log "PASS"
