#!/usr/bin/env bash
# Installs what Switchyard needs (Debian packages), builds it and runs the whole test suite.
# Usage: scripts/test.sh [BUILD_DIR] [extra cmake args...]
#   scripts/test.sh                                   # Release build in ./build
#   scripts/test.sh build-asan -DSY_SANITIZE=ON       # ASan + UBSan build
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
bash scripts/install-deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build" -j2
cd "$build"
ctest --output-on-failure --timeout 600
