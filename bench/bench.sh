#!/usr/bin/env bash
# Switchyard benchmark: pgbench -S straight to PostgreSQL ("direct"), through Switchyard and
# through PgBouncer (session mode), plus the proxies' memory with 500 idle sessions.
#
#   bench/bench.sh [--quick]
#
# Environment:
#   BUILD_DIR        where switchyard and switchyardctl were built, in Release (default: build/
#                    in the repository: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release)
#   DURATION         seconds per pgbench run (default 10)
#   ROUNDS           rounds; the order of the targets alternates each round (default 3)
#   SKIP_SWITCHYARD  1: leave Switchyard out (to try the script without a built proxy)
#   --quick          DURATION=3 ROUNDS=1
#
# Targets: direct, switchyard, pgbouncer, and floor: bench/minrelay.c, the smallest possible relay
# (two blocking threads doing read then write), built here to show what one extra hop costs on
# this machine whatever a proxy does.
#
# Builds nothing. Starts its own throwaway PostgreSQL server and PgBouncer on free ports in a
# temporary directory and removes everything on exit. Results go to stdout and to
# bench/results/last.txt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/support/pglib.sh
. "$root/tests/support/pglib.sh"

usage() {
    sed -n '2,21s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

quick=0
for arg in "$@"; do
    case "$arg" in
    --quick) quick=1 ;;
    -h | --help) usage ;;
    *)
        echo "bench.sh: unknown argument '$arg'" >&2
        usage
        ;;
    esac
done

BUILD_DIR=${BUILD_DIR:-$root/build}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SKIP_SWITCHYARD=${SKIP_SWITCHYARD:-0}
if [ "$quick" -eq 1 ]; then
    DURATION=3
    ROUNDS=1
fi
SCALE=10
IDLE_SESSIONS=500
IDLE_SLEEP_S=15
RSS_SAMPLE_AFTER_S=8

[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || pglib_die "DURATION must be a whole number of seconds, not '$DURATION'"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || pglib_die "ROUNDS must be a positive whole number, not '$ROUNDS'"

say() { printf '==> %s\n' "$*"; }

# ---- preconditions ----

pglib_check_tools || exit 1
for tool in pgbench pgbouncer psql awk; do
    command -v "$tool" >/dev/null || pglib_die "$tool not found: run scripts/install-deps.sh"
done
# floor: bench/minrelay.c, the smallest possible relay (blocking read/write, no parsing), to show
# what one extra hop costs on this machine whatever the proxy does.
TARGETS=(direct switchyard pgbouncer floor)
if [ "$SKIP_SWITCHYARD" = 1 ]; then
    TARGETS=(direct pgbouncer floor)
    pglib_log "SKIP_SWITCHYARD=1: benchmarking direct and pgbouncer only"
else
    abs_build=$(cd "$BUILD_DIR" 2>/dev/null && pwd) ||
        pglib_die "BUILD_DIR '$BUILD_DIR' does not exist; build first: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2"
    BUILD_DIR=$abs_build
    for bin in switchyard switchyardctl; do
        [ -x "$BUILD_DIR/$bin" ] ||
            pglib_die "$BUILD_DIR/$bin not found; build first: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2"
    done
    build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
    if [ "$build_type" != Release ]; then
        pglib_log "warning: $BUILD_DIR is a '${build_type:-unknown}' build, not Release; the figures will not be representative"
    fi
fi

# Every session is a descriptor on each side of a proxy.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
    ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi

CLK_TCK=$(getconf CLK_TCK)

# ---- cleanup ----

TMP=""
PG_DATA=""
PGB_PID=""
SY_PID=""
FLOOR_PID=""
BG_PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    if [ -n "$SY_PID" ]; then
        pglib_stop_pid "$SY_PID" TERM 10 || true
    fi
    if [ -n "$FLOOR_PID" ]; then
        pglib_stop_pid "$FLOOR_PID" TERM 10 || true
    fi
    if [ -n "$PGB_PID" ]; then
        pglib_stop_pid "$PGB_PID" TERM 10 || true
    fi
    if [ -n "$PG_DATA" ]; then
        pglib_pg_stop "$PG_DATA" "$TMP/pg/pg.log" fast || true
    fi
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d /tmp/sybench.XXXXXX)
chmod 0755 "$TMP"

# ---- PostgreSQL ----

PG_PORT=$(pglib_free_port) || pglib_die "no free port for PostgreSQL"
say "starting PostgreSQL 15 (max_connections=600) in $TMP/pg"
mkdir "$TMP/pg"
pglib_own "$TMP/pg"
pglib_initdb "$TMP/pg/data" || pglib_die "initdb failed"
# shared_buffers holds the whole scale-10 data set, so runs measure the proxies, not the disk.
pglib_configure "$TMP/pg/data" "$PG_PORT" "$TMP/pg" "max_connections = 600" "shared_buffers = 256MB"
PG_DATA=$TMP/pg/data
PG_PORT=$(pglib_pg_start "$PG_DATA" "$TMP/pg/pg.log") || pglib_die "PostgreSQL did not start"
pglib_createdb "$PG_PORT" bench >/dev/null || pglib_die "could not create database bench"
say "pgbench -i -s $SCALE"
if ! pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >"$TMP/init.out" 2>&1; then
    pglib_tail "$TMP/init.out"
    pglib_die "pgbench -i failed"
fi
# Load the data set into shared buffers.
pglib_psql "$PG_PORT" bench "SELECT count(*) FROM pgbench_accounts" >/dev/null

# ---- proxies ----

used_ports=("$PG_PORT")
PGB_PORT=$(pglib_free_port "${used_ports[@]}") || pglib_die "no free port for pgbouncer"
used_ports+=("$PGB_PORT")
say "starting PgBouncer (session mode) on 127.0.0.1:$PGB_PORT"
mkdir "$TMP/pgbouncer"
pglib_own "$TMP/pgbouncer"
PGB_PID=$(pglib_pgbouncer_start "$TMP/pgbouncer" "$PGB_PORT" "$PG_PORT") || pglib_die "pgbouncer did not start"

SY_PORT=""
if [ "$SKIP_SWITCHYARD" != 1 ]; then
    SY_PORT=$(pglib_free_port "${used_ports[@]}") || pglib_die "no free port for switchyard"
    cat >"$TMP/switchyard.ini" <<EOF
[switchyard]
protocol = postgres
listen = 127.0.0.1:$SY_PORT
admin_socket = $TMP/sy.sock
log_level = warn
auth_type = trust

[blue]
host = 127.0.0.1
port = $PG_PORT

[green]
host = 127.0.0.1
port = $PG_PORT
EOF
    say "starting Switchyard on 127.0.0.1:$SY_PORT"
    # In a session of its own, like PgBouncer (which daemonizes) and PostgreSQL: with the
    # kernel's autogroup scheduling a proxy left in this script's session would share one CPU
    # share with pgbench, and be measured against PgBouncer on unequal terms.
    setsid "$BUILD_DIR/switchyard" -c "$TMP/switchyard.ini" >"$TMP/switchyard.log" 2>&1 &
    SY_PID=$!
    if ! pglib_wait_port 127.0.0.1 "$SY_PORT" 10 "$SY_PID"; then
        pglib_tail "$TMP/switchyard.log"
        pglib_die "switchyard is not accepting connections on 127.0.0.1:$SY_PORT"
    fi
fi

FLOOR_PORT=$(pglib_free_port "${used_ports[@]}" "$SY_PORT") || pglib_die "no free port for minrelay"
cc -O2 -pthread -o "$TMP/minrelay" "$here/minrelay.c" || pglib_die "cannot build bench/minrelay.c"
say "starting minrelay (the floor) on 127.0.0.1:$FLOOR_PORT"
setsid "$TMP/minrelay" "$FLOOR_PORT" "$PG_PORT" >"$TMP/minrelay.log" 2>&1 &
FLOOR_PID=$!
pglib_wait_port 127.0.0.1 "$FLOOR_PORT" 10 "$FLOOR_PID" || pglib_die "minrelay did not start"

target_port() {
    case "$1" in
    direct) echo "$PG_PORT" ;;
    floor) echo "$FLOOR_PORT" ;;
    switchyard) echo "$SY_PORT" ;;
    pgbouncer) echo "$PGB_PORT" ;;
    esac
}
target_pid() {
    case "$1" in
    direct) echo "" ;;
    floor) echo "$FLOOR_PID" ;;
    switchyard) echo "$SY_PID" ;;
    pgbouncer) echo "$PGB_PID" ;;
    esac
}
target_log() {
    case "$1" in
    direct) echo "$TMP/pg/pg.log" ;;
    floor) echo "$TMP/minrelay.log" ;;
    switchyard) echo "$TMP/switchyard.log" ;;
    pgbouncer) echo "$TMP/pgbouncer/pgbouncer.log" ;;
    esac
}

# ---- the runs ----

SCENARIOS=(c16_simple c16_prepared c1_simple)
scenario_args() {
    case "$1" in
    c16_simple) echo "-c 16 -j 2 -M simple" ;;
    c16_prepared) echo "-c 16 -j 2 -M prepared" ;;
    c1_simple) echo "-c 1 -j 1 -M simple" ;;
    esac
}
scenario_title() {
    case "$1" in
    c16_simple) echo "16 clients, -M simple (-j 2)" ;;
    c16_prepared) echo "16 clients, -M prepared (-j 2)" ;;
    c1_simple) echo "1 client, -M simple" ;;
    esac
}

declare -A R=() # "scenario|target|metric" -> space-separated values, one per round
add_result() { R["$1|$2|$3"]="${R["$1|$2|$3"]:-} $4"; }

# pgbench_field FILE REGEX: the first number after REGEX in pgbench's output.
pgbench_field() {
    sed -n "s/^$2[^0-9]*\([0-9][0-9.]*\).*/\1/p" "$1" | head -n 1
}

dead_reported=""
run_one() {
    local sc=$1 tgt=$2 round=$3 port pid out t0=0 t1 tps lat failed tx cpu="-" cpu_note="" rc=0
    port=$(target_port "$tgt")
    pid=$(target_pid "$tgt")
    out="$TMP/run.$sc.$tgt.$round.out"
    if [ -n "$pid" ] && ! pglib_pid_alive "$pid"; then
        if [[ " $dead_reported " != *" $tgt "* ]]; then
            pglib_log "$tgt (pid $pid) is no longer running"
            pglib_tail "$(target_log "$tgt")"
            dead_reported="$dead_reported $tgt"
        fi
        add_result "$sc" "$tgt" tps ERR
        printf '  round %d/%d  %-14s %-10s  ERR (proxy not running)\n' "$round" "$ROUNDS" "$sc" "$tgt"
        return 0
    fi
    if [ -n "$pid" ]; then
        t0=$(pglib_cpu_ticks "$pid" || echo 0)
    fi
    # shellcheck disable=SC2046 # the scenario's arguments are split on purpose
    pgbench -n -S $(scenario_args "$sc") -T "$DURATION" -h 127.0.0.1 -p "$port" -U postgres \
        bench >"$out" 2>&1 || rc=$?
    tps=$(pgbench_field "$out" "tps = ")
    lat=$(pgbench_field "$out" "latency average = ")
    failed=$(pgbench_field "$out" "number of failed transactions: ")
    tx=$(pgbench_field "$out" "number of transactions actually processed: ")
    if [ "$rc" -ne 0 ] || [ -z "$tps" ] || [ -z "$tx" ]; then
        pglib_log "pgbench against $tgt failed (exit $rc)"
        pglib_tail "$out" 10
        add_result "$sc" "$tgt" tps ERR
        printf '  round %d/%d  %-14s %-10s  ERR\n' "$round" "$ROUNDS" "$sc" "$tgt"
        return 0
    fi
    if [ -n "$pid" ]; then
        if t1=$(pglib_cpu_ticks "$pid") && [ "$tx" -gt 0 ]; then
            cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$tx" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
            add_result "$sc" "$tgt" cpu "$cpu"
            cpu_note="  proxy CPU $cpu us/tx"
        fi
    fi
    add_result "$sc" "$tgt" tps "$tps"
    add_result "$sc" "$tgt" lat "$lat"
    add_result "$sc" "$tgt" failed "${failed:-0}"
    printf '  round %d/%d  %-14s %-10s  tps %10.1f  latency %7.3f ms  failed %s%s\n' \
        "$round" "$ROUNDS" "$sc" "$tgt" "$tps" "$lat" "${failed:-0}" "$cpu_note"
}

say "warming up (direct, 2 s)"
pgbench -n -S -c 4 -j 2 -T 2 -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1 ||
    pglib_die "warm-up pgbench run against PostgreSQL failed"

nruns=$((ROUNDS * ${#SCENARIOS[@]} * ${#TARGETS[@]}))
say "running $nruns pgbench -S runs of $DURATION s ($ROUNDS round(s); about $((nruns * (DURATION + 1))) s)"
started=$EPOCHSECONDS
for ((round = 1; round <= ROUNDS; round++)); do
    order=("${TARGETS[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do
            order+=("${TARGETS[$i]}")
        done
    fi
    for sc in "${SCENARIOS[@]}"; do
        for tgt in "${order[@]}"; do
            run_one "$sc" "$tgt" "$round"
        done
    done
done

# ---- memory with idle sessions ----

printf 'SELECT 1;\n\\sleep %d s\n' "$IDLE_SLEEP_S" >"$TMP/idle.sql"
declare -A RSS_BASE=() RSS_LOADED=() RSS_BACKENDS=() RSS_STATUS=()
client_backends() {
    pglib_psql "$PG_PORT" postgres \
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench' AND backend_type = 'client backend'" 2>/dev/null || echo "?"
}
rss_test() {
    local tgt=$1 port pid bgpid rc=0 i n
    port=$(target_port "$tgt")
    pid=$(target_pid "$tgt")
    if ! pglib_pid_alive "$pid"; then
        RSS_STATUS[$tgt]="not running"
        return 0
    fi
    # Sessions left open by an earlier test would skew the count: wait for them to go.
    for ((i = 0; i < 100; i++)); do
        n=$(client_backends)
        [ "$n" != "?" ] && [ "$n" -lt 50 ] && break
        sleep 0.1
    done
    say "$tgt: opening $IDLE_SESSIONS idle sessions (pgbench -c $IDLE_SESSIONS -j 2 -t 1, SELECT 1 then \\sleep $IDLE_SLEEP_S s)"
    RSS_BASE[$tgt]=$(pglib_rss_kb "$pid")
    pgbench -n -f "$TMP/idle.sql" -c "$IDLE_SESSIONS" -j 2 -t 1 -h 127.0.0.1 -p "$port" \
        -U postgres bench >"$TMP/idle.$tgt.out" 2>&1 &
    bgpid=$!
    BG_PIDS+=("$bgpid")
    sleep "$RSS_SAMPLE_AFTER_S"
    # PgBouncer opens server connections one at a time: give the last sessions a few more
    # seconds (while the clients still sleep) to reach the server before sampling.
    for ((i = 0; i < (IDLE_SLEEP_S - RSS_SAMPLE_AFTER_S - 3) * 10; i++)); do
        n=$(client_backends)
        [ "$n" != "?" ] && [ "$n" -ge "$IDLE_SESSIONS" ] && break
        sleep 0.1
    done
    RSS_LOADED[$tgt]=$(pglib_rss_kb "$pid" || echo "")
    RSS_BACKENDS[$tgt]=$(client_backends)
    wait "$bgpid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        pglib_log "pgbench with $IDLE_SESSIONS idle sessions against $tgt failed (exit $rc)"
        pglib_tail "$TMP/idle.$tgt.out" 10
        RSS_STATUS[$tgt]="pgbench failed (exit $rc)"
    else
        RSS_STATUS[$tgt]=ok
    fi
}
# Switchyard first: PgBouncer keeps its server connections pooled after its clients leave.
for tgt in "${TARGETS[@]}"; do
    if [ "$tgt" != direct ] && [ "$tgt" != floor ]; then
        rss_test "$tgt"
    fi
done
elapsed=$((EPOCHSECONDS - started))

# ---- report ----

# median VALUE...: the median of the numeric values ("NA" if none).
median() {
    printf '%s\n' "$@" | awk '/^[0-9]+(\.[0-9]+)?$/ { print }' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# sum VALUE...: the sum of the numeric values.
sum() {
    printf '%s\n' "$@" | awk '/^[0-9]+$/ { s += $1 } END { print s + 0 }'
}
# calc EXPR A B FORMAT: evaluates EXPR over a and b with awk; "NA" unless both are numbers.
calc() {
    if [[ "$2" =~ ^-?[0-9]+(\.[0-9]+)?$ && "$3" =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then
        awk -v a="$2" -v b="$3" -v f="$4" "BEGIN { printf f, $1 }"
    else
        echo NA
    fi
}
# ratio A B: a / b to three places; "NA" if either is missing or b is 0.
ratio() {
    if [[ "$2" =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v b="$2" 'BEGIN { exit !(b > 0) }'; then
        calc "a / b" "$1" "$2" "%.3f"
    else
        echo NA
    fi
}
# fmt PRINTF_FORMAT VALUE: formats a number; passes anything else ("NA", "-") through.
fmt() {
    if [[ "$2" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
        # shellcheck disable=SC2059 # the format is the argument
        printf "$1" "$2"
    else
        printf '%s' "$2"
    fi
}
kb_mb() { if [[ "${1:-}" =~ ^[0-9]+$ ]]; then awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; else echo "?"; fi; }

report() {
    local sc tgt tps lat cpu failed runs
    local -A mtps=() mlat=()
    echo "Switchyard benchmark: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit:     $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
    echo "host:       $(uname -srm), $(nproc) CPU(s), $(awk '/^MemTotal/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo) RAM"
    echo "versions:   $("$PG_BIN/postgres" --version), $(pgbouncer --version | head -n 1), $(pgbench --version)"
    echo "setup:      pgbench -S, scale $SCALE, $DURATION s per run, $ROUNDS round(s), medians over rounds;"
    echo "            PostgreSQL max_connections=600 shared_buffers=256MB fsync=off; PgBouncer pool_mode=session"
    echo "            proxy CPU = utime+stime of the proxy process during the run / transactions (us per tx)"
    if [ "$SKIP_SWITCHYARD" = 1 ]; then
        echo "            (Switchyard skipped: SKIP_SWITCHYARD=1)"
    fi
    for sc in "${SCENARIOS[@]}"; do
        echo ""
        echo "== $(scenario_title "$sc"): pgbench -n -S $(scenario_args "$sc") -T $DURATION =="
        printf '%-12s %12s %14s %10s %18s %6s\n' target "tps" "latency (ms)" failed "proxy CPU (us/tx)" runs
        for tgt in "${TARGETS[@]}"; do
            # shellcheck disable=SC2086 # one word per round
            {
                tps=$(median ${R["$sc|$tgt|tps"]:-})
                lat=$(median ${R["$sc|$tgt|lat"]:-})
                failed=$(sum ${R["$sc|$tgt|failed"]:-})
                cpu="-"
                if [ "$tgt" != direct ]; then
                    cpu=$(median ${R["$sc|$tgt|cpu"]:-})
                fi
                runs=$(printf '%s\n' ${R["$sc|$tgt|tps"]:-} | awk '/^[0-9]/ { n++ } END { print n + 0 }')
            }
            mtps[$tgt]=$tps
            mlat[$tgt]=$lat
            printf '%-12s %12s %14s %10s %18s %6s\n' "$tgt" "$(fmt '%.1f' "$tps")" \
                "$(fmt '%.3f' "$lat")" "$failed" "$(fmt '%.2f' "$cpu")" "$runs/$ROUNDS"
        done
        if [ "$SKIP_SWITCHYARD" != 1 ]; then
            printf 'tps ratio   switchyard/direct %s   pgbouncer/direct %s   floor/direct %s   switchyard/pgbouncer %s\n' \
                "$(ratio "${mtps[switchyard]}" "${mtps[direct]}")" \
                "$(ratio "${mtps[pgbouncer]}" "${mtps[direct]}")" \
                "$(ratio "${mtps[floor]}" "${mtps[direct]}")" \
                "$(ratio "${mtps[switchyard]}" "${mtps[pgbouncer]}")"
        else
            printf 'tps ratio   pgbouncer/direct %s\n' "$(ratio "${mtps[pgbouncer]}" "${mtps[direct]}")"
        fi
        if [ "$sc" = c1_simple ]; then
            printf 'added latency vs direct (us):'
            for tgt in "${TARGETS[@]}"; do
                [ "$tgt" = direct ] && continue
                printf '   %s %s' "$tgt" "$(calc "(a - b) * 1000" "${mlat[$tgt]}" "${mlat[direct]}" "%+.1f")"
            done
            printf '\n'
        fi
    done
    echo ""
    echo "== resident memory (VmRSS) with $IDLE_SESSIONS idle sessions (SELECT 1, then \\sleep $IDLE_SLEEP_S s; sampled ${RSS_SAMPLE_AFTER_S}-$((IDLE_SLEEP_S - 3)) s in, once the sessions reach the server) =="
    printf '%-12s %12s %16s %14s %16s  %s\n' target baseline "with sessions" "per session" "server sessions" status
    for tgt in "${TARGETS[@]}"; do
        [ "$tgt" = direct ] || [ "$tgt" = floor ] && continue
        local base=${RSS_BASE[$tgt]:-} loaded=${RSS_LOADED[$tgt]:-} per="?"
        if [[ "$base" =~ ^[0-9]+$ && "$loaded" =~ ^[0-9]+$ ]]; then
            per=$(awk -v a="$loaded" -v b="$base" -v n="$IDLE_SESSIONS" 'BEGIN { printf "%.1f KB", (a - b) / n }')
        fi
        printf '%-12s %12s %16s %14s %16s  %s\n' "$tgt" "$(kb_mb "$base")" "$(kb_mb "$loaded")" "$per" \
            "${RSS_BACKENDS[$tgt]:-?}" "${RSS_STATUS[$tgt]:-not run}"
    done
    echo ""
    echo "total benchmark time: ${elapsed} s"
}

mkdir -p "$here/results"
if [ ! -f "$here/results/.gitignore" ]; then
    printf '*.txt\n' >"$here/results/.gitignore"
fi
report >"$TMP/report.txt"
cp "$TMP/report.txt" "$here/results/last.txt"
echo ""
cat "$TMP/report.txt"
echo ""
say "results written to $here/results/last.txt"
