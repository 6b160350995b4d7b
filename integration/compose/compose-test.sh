#!/usr/bin/env bash
# compose-test.sh — the docker-compose NAT lab end to end (`make compose-test`).
#
# Builds our static binaries and the FROM-scratch image, brings up
# docker-compose.yml (hub + bootstrap on a WAN, node_a/node_b behind NAT
# routers of types NAT_A / NAT_B, node_c/node_d behind symmetric NATs) running
# the real `a2al-node run`, waits until node_a has connected to node_b
# (punching if needed) and node_c to node_d (only possible through the hub's
# TURN relay: the path must be "relayed"), checks that a DHT FIND_NODE on each
# pair then rides the pooled Mode B connection, prints the outcome and always
# tears everything down. Exit status: 0 on success.
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

NODES=(node_a node_b node_c node_d)
for n in "${NODES[@]}"; do wait_for "$n control endpoint" debug "$n" /api/status; done
ADDR_B=$(node_address node_b)
ADDR_D=$(node_address node_d)
[ -n "$ADDR_B" ] && [ -n "$ADDR_D" ] || die "cannot read node_b's or node_d's address"
log "node_b address: $ADDR_B"
log "node_d address: $ADDR_D"
for n in "${NODES[@]}"; do wait_for "$n NAT classified" node_nat_known "$n"; done
for n in "${NODES[@]}"; do wait_for "$n published" node_published "$n"; done

# connect CALLER CALLEE_ADDR: Mode A dial until it succeeds; sets OUT to the
# punch() line and PATH_TYPE to its path.
connect() {
  log "$1 -> $2: dialing"
  OUT=""
  until OUT=$(punch "$1" "$2" 2>&1); do
    check_alive
    [ $SECONDS -lt $deadline ] || die "$1 never connected; last output: $OUT"
    sleep 3
  done
  PATH_TYPE=$(printf '%s' "$OUT" | cut -d' ' -f4)
}

connect node_a "$ADDR_B"
OUT_AB=$OUT PATH_AB=$PATH_TYPE
DHT_AB=$(dht_transport node_a "$ADDR_B")

# node_c and node_d sit behind symmetric NATs: no punch can work, the caller
# must get a relayed connection through the hub's TURN server.
connect node_c "$ADDR_D"
OUT_CD=$OUT PATH_CD=$PATH_TYPE
DHT_CD=$(dht_transport node_c "$ADDR_D")
POOL_CD=$(pool_path node_c "$ADDR_D")

printf '\n%-10s %-20s %-20s %-50s %-15s %s\n' pair "NAT a" "NAT b" "result (punch time, remote, path, candidates)" "FIND_NODE" "pool path"
printf '%-10s %-20s %-20s %-50s %-15s %s\n' "a->b" "$(node_nat node_a)" "$(node_nat node_b)" "$OUT_AB" "$DHT_AB" "$(pool_path node_a "$ADDR_B")"
printf '%-10s %-20s %-20s %-50s %-15s %s\n' "c->d" "$(node_nat node_c)" "$(node_nat node_d)" "$OUT_CD" "$DHT_CD" "$POOL_CD"
case "$PATH_AB" in
  punched | relayed) [ "$DHT_AB" = modeB ] || die "after the $PATH_AB connection, FIND_NODE a->b went over '$DHT_AB', want the Mode B connection" ;;
esac
[ "$PATH_CD" = relayed ] || die "symmetric<->symmetric pair c->d connected over '$PATH_CD', want relayed"
[ "$POOL_CD" = relayed ] || die "node_c's pool entry for node_d has path '$POOL_CD', want relayed (/debug/host)"
[ "$DHT_CD" = modeB ] || die "FIND_NODE c->d went over '$DHT_CD', want the relayed Mode B connection"
log "PASS"
