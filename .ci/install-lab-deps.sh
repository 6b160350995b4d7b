#!/usr/bin/env bash
# Installs what the real-NAT lab (integration/natlab) and the compose lab
# (integration/compose) need on a Debian/Ubuntu machine. Idempotent: it only
# calls apt-get when a tool is missing. Run as root (CI runs as root).
#   LAB_DEPS_DOCKER=0  skip docker.io/docker-compose (netns lab only)
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-lab-deps: not root; skipping (the lab tests will skip and say why)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-lab-deps: no apt-get; install iproute2 nftables conntrack procps by hand" >&2
  exit 0
fi

need=()
command -v ip        >/dev/null 2>&1 || need+=(iproute2)
command -v nft       >/dev/null 2>&1 || need+=(nftables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v sysctl    >/dev/null 2>&1 || need+=(procps)
command -v tc        >/dev/null 2>&1 || need+=(iproute2)
# systemd-analyze verify checks deploy/*.service (nothing is started: the
# package only brings the tool here; no init runs in CI).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# miniupnpd (UPnP IGD + NAT-PMP + PCP) runs only inside lab router namespaces
# with a config the port-mapping tests write; it must never start on the host.
command -v miniupnpd >/dev/null 2>&1 || [ -x /usr/sbin/miniupnpd ] || need+=(miniupnpd-nftables)
command -v turnserver >/dev/null 2>&1 || need+=(coturn)   # relay lab scenario
if [ "${LAB_DEPS_DOCKER:-1}" != 0 ]; then
  command -v dockerd        >/dev/null 2>&1 || need+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "install-lab-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Deny every service start during the install (daemons run only in labs).
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
fi
echo "install-lab-deps: ip=$(command -v ip) nft=$(command -v nft) conntrack=$(command -v conntrack) turnserver=$(command -v turnserver || echo none) docker=$(command -v docker || echo none) compose=$(command -v docker-compose || echo none)"
