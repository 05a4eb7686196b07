#!/bin/sh
# Runs every libFuzzer target built in BUILD_DIR/tests for SECONDS each, one after the other.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS
#
# Each target starts from a copy of its seed corpus, tests/fuzz/corpus/<name>, where <name> is
# the target's name without "fuzz_" (and without "pg_"): fuzz_pg_startup uses corpus/startup,
# fuzz_config uses corpus/config. The copy lives in a temporary directory, so the corpus in the
# tree is never modified. A crashing input is kept in BUILD_DIR/fuzz-artifacts/<target>/.
# Exits 1 if any target found a crash (or could not run), 2 on bad usage.
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build_dir=$1
seconds=$2
case $seconds in
    '' | *[!0-9]*) echo "$0: SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
corpus_root=$here/corpus
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM

found=0
failed=""
for bin in "$build_dir"/tests/fuzz_*; do
    if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
        continue
    fi
    found=$((found + 1))
    target=$(basename "$bin")
    name=${target#fuzz_}
    seeds=$corpus_root/$name
    [ -d "$seeds" ] || seeds=$corpus_root/${name#pg_}

    corpus=$work/$target
    mkdir -p "$corpus"
    if [ -d "$seeds" ]; then
        cp -R "$seeds"/. "$corpus"/
    else
        echo "$target: no seed corpus in $corpus_root/$name or $corpus_root/${name#pg_}" >&2
    fi
    artifacts=$build_dir/fuzz-artifacts/$target
    mkdir -p "$artifacts"

    echo "== $target: ${seconds}s from $(find "$corpus" -type f | wc -l) seeds"
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" >"$work/$target.log" 2>&1
    rc=$?
    tail -n 15 "$work/$target.log"
    if [ $rc -ne 0 ]; then
        echo "== $target FAILED (exit $rc); inputs kept in $artifacts/" >&2
        grep -m 5 -E 'ERROR: |check failed|runtime error|Test unit written' "$work/$target.log" >&2
        failed="$failed $target"
    else
        echo "== $target: no crash"
    fi
done

if [ "$found" -eq 0 ]; then
    echo "$0: no fuzz_* binaries in $build_dir/tests (configure with -DSY_FUZZ=ON and CC=clang)" >&2
    exit 1
fi
if [ -n "$failed" ]; then
    echo "crashes found by:$failed" >&2
    exit 1
fi
echo "all $found fuzz targets ran ${seconds}s without a crash"
