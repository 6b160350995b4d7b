#!/usr/bin/env bash
# image.sh — build the production image from the binaries of "make build"
# (FROM scratch: nothing is pulled), and with "test" also run it:
#   deploy/image.sh         build (tag $IMAGE, default a2al-node:latest)
#   deploy/image.sh test    build, then check the image runs a2al-node demo,
#                           id (as the non-root user, writing /data) and
#                           signal-hub -version, all without a network
# Exits 0 with one "skip:" line when no docker engine answers.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-a2al-node:latest}
CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
BIN=${BIN_DIR:-bin} # where "make build" put the static binaries

if ! docker info >/dev/null 2>&1; then
  echo "skip: no docker engine answers (start dockerd to build the image)"
  exit 0
fi
[ -r "$CA" ] || { echo "image.sh: no CA bundle at $CA (install ca-certificates or set CA_BUNDLE)" >&2; exit 1; }
[ -x "$BIN/a2al-node" ] && [ -x "$BIN/signal-hub" ] || { echo "image.sh: no binaries in $BIN: run make build first" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$BIN/a2al-node" "$BIN/signal-hub" "$CA" "$ctx/"
printf 'root:x:0:0:root:/:/nonexistent\na2al:x:65532:65532:a2al:/data:/nonexistent\n' >"$ctx/passwd"
printf 'root:x:0:\na2al:x:65532:\n' >"$ctx/group"
mkdir "$ctx/data"
docker build -q -t "$IMAGE" -f deploy/Dockerfile "$ctx" >"$ctx/build.log" 2>&1 || { cat "$ctx/build.log" >&2; exit 1; }
echo "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
[ "${1:-}" = test ] || exit 0

fail() { echo "image test: $*" >&2; exit 1; }
[ "$(docker image inspect -f '{{.Config.User}}' "$IMAGE")" = 65532:65532 ] || fail "image does not run as 65532"
out=$(docker run --rm --network none "$IMAGE" demo --latency 0) || fail "demo failed: $out"
grep -q 'done:' <<<"$out" || fail "demo printed no result: $out"
echo "image test: demo ok ($(grep -c punched <<<"$out") punch lines)"
out=$(docker run --rm --network none "$IMAGE" id --json) || fail "id failed: $out"
grep -q '"key_file": "/data/node.key"' <<<"$out" || fail "id did not use /data: $out"
docker run --rm --network none --entrypoint /bin/signal-hub "$IMAGE" -version | grep -q '^signal-hub ' || fail "signal-hub -version"
echo "image test: ok"
