#!/usr/bin/env bash
# What shadow traffic costs: pgbench -S (16 clients) through Switchyard with shadowing off and on
# (every session shadowed), on a throwaway blue and green holding the same pgbench data set
# (pgbench -i -s 10 on each, the same role with the same SCRAM verifier, no replication).
# Prints, per mode: tps, average latency, Switchyard's own CPU per transaction (utime+stime from
# /proc/PID/stat around the run), the report's statements mirrored, compared and matched; then
# the ratios against shadow off and the proxy CPU per mirrored statement:
#
#     (CPU per transaction with shadow - CPU per transaction without) * transactions / mirrored
#
# (per transaction, so that runs with different throughput compare). Medians over the rounds;
# the order of the modes alternates each round.
#
#   bench/shadow.sh [BUILD_DIR]      (default build/; a Release build: cmake -S . -B build
#                                     -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2)
#
# The coverage printed beside each mode is the report's compared / seen: with every session
# shadowed, the share of the statements blue answered that were also compared with green.
#
# Two passes: every mode at full speed, then every mode at one rate (pgbench -R), 80 % of the
# slowest mode's full-speed tps. At full speed green competes with blue for the machine's CPUs,
# so the shadowed modes run at a fraction of the relay's throughput, and a relay's CPU per
# transaction grows as its load falls (fewer events handled per wake-up); the second pass
# compares the modes at the same load.
#
# Environment: DURATION (seconds per run, default 10), CLIENTS (default 16), ROUNDS (default 2),
# RATE (the second pass's rate; 0 skips it),
# MODES (default "off reads all": all mirrors the same select-only traffic without the read-only
# login, a reference for reads), STRACE (set: count Switchyard's system calls per transaction
# with strace -c; strace slows the proxy, so the CPU figures of such a run are not comparable).
#
# A script, not a timed test: blue, green, pgbench and Switchyard share this machine, so green's
# work competes with blue's for the same CPUs and the figures move between runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$root/build}" 2>/dev/null && pwd) || {
    echo "shadow.sh: build directory ${1:-$root/build} not found" >&2
    exit 2
}
# shellcheck source=/dev/null # tests/support/pglib.sh
. "$root/tests/support/pglib.sh"
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
ROUNDS=${ROUNDS:-2}
read -r -a MODES <<<"${MODES:-off reads all}"
for b in switchyard switchyardctl; do
    [ -x "$bin/$b" ] || pglib_die "$bin/$b not found; build first"
done
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$bin/CMakeCache.txt" 2>/dev/null || true)
[ "$build_type" = Release ] ||
    pglib_log "warning: $bin is a '${build_type:-unknown}' build, not Release; the figures will not be representative"
CLK_TCK=$(getconf CLK_TCK)

T=$(mktemp -d /tmp/sy-bench-shadow-XXXXXX)
chmod 0755 "$T"
sy_pid=
cleanup() {
    [ -n "$sy_pid" ] && kill "$sy_pid" 2>/dev/null
    wait 2>/dev/null || true
    bash "$root/tests/support/pg_cluster.sh" stop "$T/pg" >/dev/null 2>&1 || true
    rm -rf "$T"
}
trap cleanup EXIT

bash "$root/tests/support/pg_cluster.sh" start "$T/pg" >/dev/null
# shellcheck source=/dev/null # written by pg_cluster.sh: BLUE_PORT, GREEN_PORT, PG_BIN ...
. "$T/pg/env"
APP_USER=sy_app
APP_PASSWORD=app-secret
for p in "$BLUE_PORT" "$GREEN_PORT"; do
    pglib_createdb "$p" shop
    "$PG_BIN/pgbench" -i -q -s 10 -h 127.0.0.1 -p "$p" -U postgres shop >"$T/init.$p" 2>&1 || {
        pglib_tail "$T/init.$p"
        pglib_die "pgbench -i failed on port $p"
    }
done
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d postgres \
    -v user="$APP_USER" -v pw="$APP_PASSWORD" <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
SQL
verifier=$("$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d postgres \
    -v user="$APP_USER" <<<"SELECT rolpassword FROM pg_authid WHERE rolname = :'user';")
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d postgres \
    -v user="$APP_USER" -v pw="$verifier" <<<'CREATE ROLE :"user" LOGIN PASSWORD :'"'"'pw'"'"';'
for p in "$BLUE_PORT" "$GREEN_PORT"; do
    pglib_psql "$p" shop "GRANT SELECT ON ALL TABLES IN SCHEMA public TO $APP_USER" >/dev/null
    pglib_psql "$p" shop "SELECT count(*) FROM pgbench_accounts" >/dev/null # into shared buffers
done

port=$(pglib_free_port "$BLUE_PORT" "$GREEN_PORT")
printf '"%s" "%s"\n' "$APP_USER" "$APP_PASSWORD" >"$T/users.txt"
chmod 600 "$T/users.txt"
cat >"$T/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $T/admin.sock
log_level = warn
auth_type = scram-sha-256
auth_file = $T/users.txt
health_interval = 0
shadow = off
shadow_sample = 1
[blue]
host = 127.0.0.1
port = $BLUE_PORT
server_tls = disable
[green]
host = 127.0.0.1
port = $GREEN_PORT
server_tls = disable
INI
"$bin/switchyard" -c "$T/sy.ini" 2>"$T/sy.log" &
sy_pid=$!
for _ in $(seq 100); do
    [ -S "$T/admin.sock" ] && break
    sleep 0.05
done
ctl() { "$bin/switchyardctl" -s "$T/admin.sock" "$@"; }
export PGPASSWORD=$APP_PASSWORD

# run MODE ROUND: one pgbench -S run in MODE; appends "mode tps lat_ms cpu_us_per_tx tx mirrored
# compared matches sessions" to $T/results.
run() {
    local mode=$1 c0 c1 out tx tps lat totals
    if [ "$mode" = off ]; then ctl shadow off >/dev/null; else ctl shadow on "$mode" >/dev/null; fi
    ctl shadow reset >/dev/null
    c0=$(pglib_cpu_ticks "$sy_pid")
    local st_pid=
    if [ -n "${STRACE:-}" ]; then
        strace -c -f -p "$sy_pid" -o "$T/strace.$mode.$2" 2>/dev/null &
        st_pid=$!
        sleep 0.3
    fi
    out=$("$PG_BIN/pgbench" -n -S -c "$CLIENTS" -j 2 -T "$DURATION" ${rate:+-R "$rate"} \
        "host=127.0.0.1 port=$port user=$APP_USER dbname=shop" 2>&1) || {
        echo "$out" | tail -n 5 >&2
        pglib_die "pgbench failed in mode $mode"
    }
    c1=$(pglib_cpu_ticks "$sy_pid")
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    totals=$(ctl --json shadow report | python3 -c '
import json, sys
t = json.load(sys.stdin)["totals"]
print(t["statements_mirrored"], t["compared"], t["matches"], t["sessions_shadowed"],
      t["coverage"]["seen"])')
    echo "$mode $tps $lat $(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$tx" \
        'BEGIN { printf "%.2f", d * 1e6 / hz / n }') $tx $totals" >>"$T/results"
    printf '  round %d  %-6s tps %9.1f  latency %6.3f ms  proxy CPU %6.2f us/tx  mirrored %s\n' \
        "$2" "$mode" "$tps" "$lat" "$(tail -n 1 "$T/results" | cut -d' ' -f4)" \
        "$(tail -n 1 "$T/results" | cut -d' ' -f6)"
    if [ -n "$st_pid" ]; then
        kill -INT "$st_pid" 2>/dev/null
        wait "$st_pid" 2>/dev/null || true
        # strace -c's table: calls in column 4; the summary line is "total".
        awk -v n="$tx" '$NF == "total" { printf "           syscalls per transaction %.2f:", $4 / n }
            $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { c[$NF] = $4 }
            END { for (k in c) if (c[k] / n >= 0.05) printf " %s %.2f", k, c[k] / n; print "" }' \
            "$T/strace.$mode.$2"
    fi
}

echo "shadow traffic cost: pgbench -S -c $CLIENTS -j 2 -T $DURATION, scale 10, $ROUNDS round(s), $(nproc) CPU(s)"
echo "build: $bin (${build_type:-unknown}), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "blue, green, pgbench and switchyard on this machine: green's queries compete for the same CPUs"
# pass [RATE]: ROUNDS rounds of every mode, the order alternating (at most RATE transactions a
# second when given), then the medians and the ratios against shadow off.
pass() {
    rate=${1:-}
    : >"$T/results"
    for ((r = 1; r <= ROUNDS; r++)); do
        if [ $((r % 2)) -eq 1 ]; then order=("${MODES[@]}"); else mapfile -t order < <(printf '%s\n' "${MODES[@]}" | tac); fi
        for m in "${order[@]}"; do run "$m" "$r"; done
    done
    echo
    summary
}

summary() {
python3 - "$T/results" "${MODES[@]}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
modes = sys.argv[2:]
med = {}
for m in modes:
    rs = [r for r in rows if r[0] == m]
    col = lambda i: statistics.median(float(r[i]) for r in rs)
    med[m] = dict(tps=col(1), lat=col(2), cpu=col(3), tx=col(4), mirrored=col(5), compared=col(6),
                  matches=col(7), sessions=col(8), seen=col(9))
print("%-6s %10s %12s %16s %11s %10s %10s %9s" % ("mode", "tps", "latency ms", "proxy CPU us/tx",
      "mirrored", "compared", "matches", "sessions"))
for m in modes:
    v = med[m]
    print("%-6s %10.1f %12.3f %16.2f %11d %10d %10d %9d" % (m, v["tps"], v["lat"], v["cpu"],
          v["mirrored"], v["compared"], v["matches"], v["sessions"]))
if "off" in med:
    off = med["off"]
    for m in modes:
        if m == "off":
            continue
        v = med[m]
        line = "%-6s tps ratio %.3f  latency ratio %.3f  proxy CPU ratio %.2f" % (
            m + "/off", v["tps"] / off["tps"], v["lat"] / off["lat"], v["cpu"] / off["cpu"])
        if v["mirrored"] > 0:
            per = (v["cpu"] - off["cpu"]) * v["tx"] / v["mirrored"]
            line += "  proxy CPU per mirrored statement %.2f us" % per
            if v["seen"] > 0:
                line += "  coverage: %.1f %% of statements compared" % (100.0 * v["compared"] / v["seen"])
        else:
            line += "  proxy CPU per mirrored statement: n/a (nothing was mirrored)"
        print(line)
EOF
}

echo "pass 1: every mode at full speed"
pass
# At full speed the modes run at different throughputs (green competes with blue for the same
# CPUs), and a relay's CPU per transaction depends on its load: fewer events per wake-up cost
# more each. The second pass runs every mode at the same rate, 80 % of the slowest mode's.
if [ -z "${RATE:-}" ]; then
    RATE=$(awk '{ print $2 }' "$T/results" | sort -g | head -n 1 | awk '{ printf "%d", $1 * 0.8 }')
fi
if [ "${RATE:-0}" != 0 ]; then
    echo
    echo "pass 2: every mode at the same rate, pgbench -R $RATE"
    pass "$RATE"
fi
grep -E 'ERROR|WARN' "$T/sy.log" | head -n 5 || true
