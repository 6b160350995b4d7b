# node-api.sh — how compose-test.sh talks to an `a2al-node run` through its
# local control API (sourced). Requires debug()/dexec() from compose-test.sh.

api()            { dexec "$1" natrouter get --timeout "${3:-5s}" "${@:4}" "http://127.0.0.1:8080$2"; }
node_address()   { api "$1" /api/status 5s --field address; }
node_nat()       { api "$1" /api/status 5s --field nat.type; }
node_nat_known() { [ "$(api "$1" /api/status 5s --field nat.known)" = true ]; }
node_published() {
  dexec "$1" natrouter get http://127.0.0.1:8080/metrics | grep -Eq '^a2al_endpoint_publish_total [1-9]'
}
# punch SERVICE ADDRESS: Mode A dial (resolve, direct, then punch via the
# hub); prints "ok <ms>ms <remote> <path> <candidates>" and succeeds only
# when connected, else prints "<reason>: <error>".
punch() {
  local body
  body=$(api "$1" "/api/dial?addr=$2&timeout=45s" 60s --method POST) || return 1
  if [ "$(printf '%s' "$body" | field ok)" != true ]; then
    printf '%s: %s\n' "$(printf '%s' "$body" | field reason)" "$(printf '%s' "$body" | field error)"
    return 1
  fi
  local took cands
  # the punch's own time when the dial punched, else the dial's
  took=$(printf '%s' "$body" | field punch.took_ms)
  [ -n "$took" ] || took=$(printf '%s' "$body" | field took_ms)
  cands=$(printf '%s' "$body" | field punch.candidates)
  printf 'ok %sms %s %s %s\n' "$took" "$(printf '%s' "$body" | field remote)" \
    "$(printf '%s' "$body" | field path)" "${cands:--}"
}
# dht_transport SERVICE ADDRESS: one FIND_NODE to ADDR; prints modeB or udp
# (or "error: ...").
dht_transport() {
  local body
  body=$(api "$1" "/api/findnode?addr=$2" 20s --method POST) || { echo "error: request failed"; return 0; }
  if [ "$(printf '%s' "$body" | field ok)" = true ]; then
    printf '%s\n' "$(printf '%s' "$body" | field transport)"
  else
    printf 'error: %s\n' "$(printf '%s' "$body" | field error)"
  fi
}
# field PATH: print one field of the JSON document on stdin (dot path, e.g.
# punch.took_ms), or nothing if absent; uses the natrouter binary built on the
# host ($BIN), since neither the images nor necessarily the host have jq.
field() { "$BIN/natrouter" field "$1" 2>/dev/null || true; }
# pool_path SERVICE ADDRESS: the path (direct, punched, relayed) of the
# service's pooled Mode B connection to ADDRESS, from /debug/host; "-" if none.
pool_path() {
  local body peer i
  body=$(api "$1" /debug/host 5s) || { echo "-"; return 0; }
  for i in $(seq 0 63); do
    peer=$(printf '%s' "$body" | field "pool.$i.peer")
    [ -n "$peer" ] || break
    if [ "$peer" = "$2" ]; then printf '%s\n' "$(printf '%s' "$body" | field "pool.$i.path")"; return 0; fi
  done
  echo "-"
}
