#!/usr/bin/env bash
# Installs everything Switchyard needs to build, test, demo and benchmark, from Debian's packages.
# Idempotent; run as root (or through sudo). Used by the README's commands and by .ci/run.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libuv1-dev libssl-dev libpq-dev libjson-c-dev libcmocka-dev
  postgresql-15 postgresql-client-15 postgresql-contrib pgbouncer
  procps strace
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's packages start a cluster and a pgbouncer service on install; the tests start their own
# servers on free ports, so those are left alone (they do not use the ports the tests pick).
