# node-api.sh — how compose-test.sh talks to a node (sourced). These use the
# labnode control API; adapt here when the nodes run a2al-node instead.
# Requires debug()/dexec() from compose-test.sh.

node_address()   { debug "$1" /lab/status | field address; }
node_nat()       { dexec "$1" natrouter get --field nat "http://127.0.0.1:8080/lab/status"; }
node_nat_known() { [ "$(dexec "$1" natrouter get --field nat_known http://127.0.0.1:8080/lab/status)" = true ]; }
node_published() {
  dexec "$1" natrouter get http://127.0.0.1:8080/metrics | grep -Eq '^a2al_endpoint_publish_total [1-9]'
}
# punch SERVICE ADDRESS: dial (resolve, direct, then punch via the hub);
# prints "ok <ms>ms <remote> <path>" and succeeds only when connected.
punch() {
  local body ok
  body=$(dexec "$1" natrouter get --timeout 60s "http://127.0.0.1:8080/lab/dial?addr=$2&timeout=45s") || return 1
  ok=$(printf '%s' "$body" | field ok)
  if [ "$ok" != true ]; then
    printf '%s\n' "$(printf '%s' "$body" | field error)"
    return 1
  fi
  local path
  path=$(dexec "$1" natrouter get --field -1.path "http://127.0.0.1:8080/lab/punches" 2>/dev/null || echo direct)
  printf 'ok %sms %s %s\n' "$(printf '%s' "$body" | field took_ms)" "$(printf '%s' "$body" | field remote)" "$path"
}
# field NAME: extract a top-level JSON field from stdin (no jq in the images
# or necessarily on the host; the body is single-line JSON from Go).
field() {
  sed -n "s/.*\"$1\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" | head -n1 | tr -d '"'
}
