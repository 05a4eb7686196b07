#!/usr/bin/env bash
# Switchyard benchmark: pgbench -S straight to PostgreSQL ("direct"), through Switchyard and
# through PgBouncer (session mode), with and without TLS on the client leg, with long-lived and
# with one-transaction connections, plus the proxies' memory with 500 idle sessions.
#
#   bench/bench.sh [--quick]
#
# Environment:
#   BUILD_DIR        where switchyard and switchyardctl were built, in Release (default: build/
#                    in the repository: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release)
#   DURATION         seconds per pgbench run (default 10)
#   TLS_DURATION     seconds per run of the "TLS on the client leg" scenario (default 5)
#   CONN_DURATION    seconds per pgbench -C run, the "new connections" scenarios (default 3)
#   ROUNDS           rounds; the order of the targets alternates each round (default 3)
#   SKIP_SWITCHYARD  1: leave Switchyard out (to try the script without a built proxy)
#   --quick          DURATION=3 TLS_DURATION=3 CONN_DURATION=3 ROUNDS=1
#
# Targets: direct, switchyard, pgbouncer, and floor: bench/minrelay.c, the smallest possible relay
# (two blocking threads doing read then write), built here to show what one extra hop costs on
# this machine whatever a proxy does. The server has TLS; every plain run uses sslmode=disable and
# both proxies are told not to use TLS towards it, so all of them compare like for like.
# TLS on the client leg: direct_tls (sslmode=require to the server), switchyard_tls and
# pgbouncer_tls (second instances with client TLS, plaintext to the server), all sslmode=require.
#
# Builds nothing. Starts its own throwaway PostgreSQL server and PgBouncers on free ports in a
# temporary directory and removes everything on exit. Results go to stdout and to
# bench/results/last.txt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=tests/support/pglib.sh
. "$root/tests/support/pglib.sh"

usage() {
    sed -n '2,27s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
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
TLS_DURATION=${TLS_DURATION:-5}
CONN_DURATION=${CONN_DURATION:-3}
ROUNDS=${ROUNDS:-3}
SKIP_SWITCHYARD=${SKIP_SWITCHYARD:-0}
if [ "$quick" -eq 1 ]; then
    DURATION=3
    TLS_DURATION=3
    CONN_DURATION=3
    ROUNDS=1
fi
SCALE=10
IDLE_SESSIONS=500
IDLE_SLEEP_S=15
RSS_SAMPLE_AFTER_S=8

[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || pglib_die "DURATION must be a whole number of seconds, not '$DURATION'"
[[ "$TLS_DURATION" =~ ^[1-9][0-9]*$ ]] || pglib_die "TLS_DURATION must be a whole number of seconds, not '$TLS_DURATION'"
[[ "$CONN_DURATION" =~ ^[1-9][0-9]*$ ]] || pglib_die "CONN_DURATION must be a whole number of seconds, not '$CONN_DURATION'"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || pglib_die "ROUNDS must be a positive whole number, not '$ROUNDS'"

say() { printf '==> %s\n' "$*"; }

# ---- preconditions ----

pglib_check_tools || exit 1
for tool in pgbench pgbouncer psql awk openssl; do
    command -v "$tool" >/dev/null || pglib_die "$tool not found: run scripts/install-deps.sh"
done
# floor: bench/minrelay.c, the smallest possible relay (blocking read/write, no parsing), to show
# what one extra hop costs on this machine whatever the proxy does.
TARGETS=(direct switchyard pgbouncer floor)
# TLS on the client leg: sslmode=require to the server itself and to second proxy instances that
# take TLS from clients and talk plaintext to the server.
TLS_TARGETS=(direct_tls switchyard_tls pgbouncer_tls)
if [ "$SKIP_SWITCHYARD" = 1 ]; then
    TARGETS=(direct pgbouncer floor)
    TLS_TARGETS=(direct_tls pgbouncer_tls)
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

# Every connection says whether it wants TLS: the server has it, and libpq's default (prefer)
# would otherwise use it wherever it is offered (direct, through the floor). Plain runs and the
# helpers use disable, as before the server had TLS; the TLS runs override it with require.
export PGSSLMODE=disable

# ---- cleanup ----

TMP=""
PG_DATA=""
PGB_PID=""
PGB_TLS_PID=""
SY_PID=""
SY_TLS_PID=""
FLOOR_PID=""
BG_PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "$SY_PID" "$SY_TLS_PID" "$FLOOR_PID" "$PGB_PID" "$PGB_TLS_PID"; do
        if [ -n "$p" ]; then
            pglib_stop_pid "$p" TERM 10 || true
        fi
    done
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

t_script=$EPOCHSECONDS
TMP=$(mktemp -d /tmp/sybench.XXXXXX)
chmod 0755 "$TMP"

# The test CA's localhost certificate (tests/support/make_certs.sh), for the server and for both
# proxies' client leg.
CERTS=$TMP/certs
"$root/tests/support/make_certs.sh" "$CERTS" >"$TMP/make_certs.out" 2>&1 || {
    pglib_tail "$TMP/make_certs.out"
    pglib_die "could not make the test certificates"
}

# ---- PostgreSQL ----

PG_PORT=$(pglib_free_port) || pglib_die "no free port for PostgreSQL"
say "starting PostgreSQL 15 (max_connections=600, ssl=on) in $TMP/pg"
mkdir "$TMP/pg"
pglib_own "$TMP/pg"
pglib_initdb "$TMP/pg/data" || pglib_die "initdb failed"
# shared_buffers holds the whole scale-10 data set, so runs measure the proxies, not the disk.
pglib_configure "$TMP/pg/data" "$PG_PORT" "$TMP/pg" "max_connections = 600" "shared_buffers = 256MB" \
    "ssl = on" "ssl_cert_file = 'server.crt'" "ssl_key_file = 'server.key'"
pglib_pg_install_cert "$TMP/pg/data" "$CERTS/server.crt" "$CERTS/server.key" ||
    pglib_die "cannot install the server certificate"
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
# The server leg is plaintext everywhere, and said so explicitly: PgBouncer 1.18's
# server_tls_sslmode defaults to disable, but Switchyard's server_tls defaults to prefer.
say "starting PgBouncer (session mode) on 127.0.0.1:$PGB_PORT"
mkdir "$TMP/pgbouncer"
pglib_own "$TMP/pgbouncer"
PGB_PID=$(pglib_pgbouncer_start "$TMP/pgbouncer" "$PGB_PORT" "$PG_PORT" "server_tls_sslmode = disable") ||
    pglib_die "pgbouncer did not start"

PGB_TLS_PORT=$(pglib_free_port "${used_ports[@]}") || pglib_die "no free port for the TLS pgbouncer"
used_ports+=("$PGB_TLS_PORT")
say "starting PgBouncer with client TLS (session mode) on 127.0.0.1:$PGB_TLS_PORT"
mkdir "$TMP/pgbouncer_tls"
cp "$CERTS/server.crt" "$CERTS/server.key" "$TMP/pgbouncer_tls/"
chmod 0600 "$TMP/pgbouncer_tls/server.key"
pglib_own "$TMP/pgbouncer_tls" "$TMP/pgbouncer_tls/server.crt" "$TMP/pgbouncer_tls/server.key"
PGB_TLS_PID=$(pglib_pgbouncer_start "$TMP/pgbouncer_tls" "$PGB_TLS_PORT" "$PG_PORT" \
    "server_tls_sslmode = disable" "client_tls_sslmode = allow" \
    "client_tls_cert_file = $TMP/pgbouncer_tls/server.crt" \
    "client_tls_key_file = $TMP/pgbouncer_tls/server.key") ||
    pglib_die "the TLS pgbouncer did not start"

# start_switchyard NAME PORT [SETTING...]: writes $TMP/NAME.ini (trust, plaintext to the server,
# the settings added to [switchyard]), starts Switchyard in the background, sets SY_STARTED to
# its PID and waits until it accepts connections.
SY_STARTED=""
start_switchyard() {
    local name=$1 port=$2 s
    shift 2
    {
        echo "[switchyard]"
        echo "protocol = postgres"
        echo "listen = 127.0.0.1:$port"
        echo "admin_socket = $TMP/$name.sock"
        echo "log_level = warn"
        echo "auth_type = trust"
        for s in "$@"; do
            echo "$s"
        done
        for s in blue green; do
            echo ""
            echo "[$s]"
            echo "host = 127.0.0.1"
            echo "port = $PG_PORT"
            echo "server_tls = disable"
        done
    } >"$TMP/$name.ini"
    say "starting Switchyard ($name) on 127.0.0.1:$port"
    # In a session of its own, like PgBouncer (which daemonizes) and PostgreSQL: with the
    # kernel's autogroup scheduling a proxy left in this script's session would share one CPU
    # share with pgbench, and be measured against PgBouncer on unequal terms.
    setsid "$BUILD_DIR/switchyard" -c "$TMP/$name.ini" >"$TMP/$name.log" 2>&1 &
    SY_STARTED=$!
    if ! pglib_wait_port 127.0.0.1 "$port" 10 "$SY_STARTED"; then
        pglib_tail "$TMP/$name.log"
        pglib_log "switchyard ($name) is not accepting connections on 127.0.0.1:$port"
        return 1
    fi
}

SY_PORT=""
SY_TLS_PORT=""
if [ "$SKIP_SWITCHYARD" != 1 ]; then
    SY_PORT=$(pglib_free_port "${used_ports[@]}") || pglib_die "no free port for switchyard"
    used_ports+=("$SY_PORT")
    start_switchyard switchyard "$SY_PORT" || { SY_PID=$SY_STARTED; pglib_die "switchyard did not start"; }
    SY_PID=$SY_STARTED
    SY_TLS_PORT=$(pglib_free_port "${used_ports[@]}") || pglib_die "no free port for the TLS switchyard"
    used_ports+=("$SY_TLS_PORT")
    start_switchyard switchyard_tls "$SY_TLS_PORT" "client_tls = allow" \
        "client_tls_cert = $CERTS/server.crt" "client_tls_key = $CERTS/server.key" ||
        { SY_TLS_PID=$SY_STARTED; pglib_die "the TLS switchyard did not start"; }
    SY_TLS_PID=$SY_STARTED
fi

FLOOR_PORT=$(pglib_free_port "${used_ports[@]}") || pglib_die "no free port for minrelay"
cc -O2 -pthread -o "$TMP/minrelay" "$here/minrelay.c" || pglib_die "cannot build bench/minrelay.c"
say "starting minrelay (the floor) on 127.0.0.1:$FLOOR_PORT"
setsid "$TMP/minrelay" "$FLOOR_PORT" "$PG_PORT" >"$TMP/minrelay.log" 2>&1 &
FLOOR_PID=$!
pglib_wait_port 127.0.0.1 "$FLOOR_PORT" 10 "$FLOOR_PID" || pglib_die "minrelay did not start"

target_port() {
    case "$1" in
    direct | direct_tls) echo "$PG_PORT" ;;
    floor) echo "$FLOOR_PORT" ;;
    switchyard) echo "$SY_PORT" ;;
    switchyard_tls) echo "$SY_TLS_PORT" ;;
    pgbouncer) echo "$PGB_PORT" ;;
    pgbouncer_tls) echo "$PGB_TLS_PORT" ;;
    esac
}
target_pid() {
    case "$1" in
    direct | direct_tls) echo "" ;;
    floor) echo "$FLOOR_PID" ;;
    switchyard) echo "$SY_PID" ;;
    switchyard_tls) echo "$SY_TLS_PID" ;;
    pgbouncer) echo "$PGB_PID" ;;
    pgbouncer_tls) echo "$PGB_TLS_PID" ;;
    esac
}
target_log() {
    case "$1" in
    direct | direct_tls) echo "$TMP/pg/pg.log" ;;
    floor) echo "$TMP/minrelay.log" ;;
    switchyard) echo "$TMP/switchyard.log" ;;
    switchyard_tls) echo "$TMP/switchyard_tls.log" ;;
    pgbouncer) echo "$TMP/pgbouncer/pgbouncer.log" ;;
    pgbouncer_tls) echo "$TMP/pgbouncer_tls/pgbouncer.log" ;;
    esac
}
# target_sslmode TARGET: the client's sslmode: require for the *_tls targets, else disable.
target_sslmode() {
    case "$1" in
    *_tls) echo require ;;
    *) echo disable ;;
    esac
}
# target_is_proxy TARGET: 0 for the targets that run a process of their own.
target_is_proxy() {
    case "$1" in
    direct | direct_tls) return 1 ;;
    *) return 0 ;;
    esac
}

# ---- what each connection really negotiated ----

# leg_check TARGET: one connection with the target's sslmode; prints the client leg as psql sees
# it and whether the backend's own connection (the server leg, or the only leg for direct) has
# TLS, from pg_stat_ssl.
declare -A LEGS=()
leg_check() {
    local tgt=$1 out client server
    if ! out=$(PGSSLMODE=$(target_sslmode "$tgt") PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -X -q -At \
        -h 127.0.0.1 -p "$(target_port "$tgt")" -U postgres -d bench \
        -c '\conninfo' -c "SELECT CASE WHEN ssl THEN version || ' ' || cipher ELSE 'none' END FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()" 2>&1); then
        LEGS[$tgt]="connection failed: $(echo "$out" | tail -n 1)"
        return 1
    fi
    client=$(echo "$out" | sed -n 's/.*SSL connection (protocol: \([^,]*\), cipher: \([^,]*\),.*/\1 \2/p')
    server=$(echo "$out" | tail -n 1)
    if target_is_proxy "$tgt"; then
        LEGS[$tgt]="client leg ${client:-none}; server leg $server"
    else
        LEGS[$tgt]="${client:-none} (server side: $server)"
    fi
}

# ---- the runs ----

# c16_simple, c16_prepared, c1_simple: plain on both legs (sslmode=disable), as before the
# server had TLS. tls_c16_simple: TLS on the client leg. conn_plain, conn_tls: pgbench -C, a new
# connection (and for direct and Switchyard a new backend) per transaction.
SCENARIOS=(c16_simple c16_prepared c1_simple tls_c16_simple conn_plain conn_tls)
scenario_args() {
    case "$1" in
    c16_simple | tls_c16_simple) echo "-c 16 -j 2 -M simple" ;;
    c16_prepared) echo "-c 16 -j 2 -M prepared" ;;
    c1_simple) echo "-c 1 -j 1 -M simple" ;;
    conn_plain | conn_tls) echo "-C -c 16 -j 2 -M simple" ;;
    esac
}
scenario_title() {
    case "$1" in
    c16_simple) echo "16 clients, -M simple (-j 2)" ;;
    c16_prepared) echo "16 clients, -M prepared (-j 2)" ;;
    c1_simple) echo "1 client, -M simple" ;;
    tls_c16_simple) echo "TLS on the client leg (sslmode=require; server leg plaintext): 16 clients, -M simple (-j 2)" ;;
    conn_plain) echo "new connections (-C: one connection per transaction), no TLS: 16 clients (-j 2)" ;;
    conn_tls) echo "new connections (-C: one connection per transaction), TLS on the client leg (sslmode=require): 16 clients (-j 2)" ;;
    esac
}
# scenario_targets SCENARIO: the targets it runs against, in round-1 order.
scenario_targets() {
    local t
    case "$1" in
    tls_c16_simple | conn_tls) echo "${TLS_TARGETS[*]}" ;;
    conn_plain)
        # No floor: minrelay has no connection handling worth measuring.
        for t in "${TARGETS[@]}"; do
            [ "$t" = floor ] || printf '%s ' "$t"
        done
        echo
        ;;
    *) echo "${TARGETS[*]}" ;;
    esac
}
scenario_duration() {
    case "$1" in
    tls_c16_simple) echo "$TLS_DURATION" ;;
    conn_*) echo "$CONN_DURATION" ;;
    *) echo "$DURATION" ;;
    esac
}
scenario_is_conn() { [[ "$1" == conn_* ]]; }

declare -A R=() # "scenario|target|metric" -> space-separated values, one per round
add_result() { R["$1|$2|$3"]="${R["$1|$2|$3"]:-} $4"; }

# pgbench_field FILE REGEX: the first number after REGEX in pgbench's output.
pgbench_field() {
    sed -n "s/^$2[^0-9]*\([0-9][0-9.]*\).*/\1/p" "$1" | head -n 1
}

# With -C, PostgreSQL 15's pgbench prints one rate, "tps = X (including reconnection times)":
# transactions over the whole run, connection set-up and tear-down included, so it is the
# connection rate here. Without -C it prints "tps = X (without initial connection time)".
# It also prints "average connection time = X ms" (the time PQconnectdb took, per connection).
dead_reported=""
run_one() {
    local sc=$1 tgt=$2 round=$3 port pid out t0=0 t1 tps lat failed tx conn cpu="-" cpu_note="" rc=0
    local unit=tx rate=tps conn_note=""
    if scenario_is_conn "$sc"; then
        unit=conn
        rate=conn/s
    fi
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
        printf '  round %d/%d  %-14s %-14s  ERR (proxy not running)\n' "$round" "$ROUNDS" "$sc" "$tgt"
        return 0
    fi
    if [ -n "$pid" ]; then
        t0=$(pglib_cpu_ticks "$pid" || echo 0)
    fi
    # shellcheck disable=SC2046 # the scenario's arguments are split on purpose
    PGSSLMODE=$(target_sslmode "$tgt") pgbench -n -S $(scenario_args "$sc") -T "$(scenario_duration "$sc")" \
        -h 127.0.0.1 -p "$port" -U postgres bench >"$out" 2>&1 || rc=$?
    tps=$(pgbench_field "$out" "tps = ")
    lat=$(pgbench_field "$out" "latency average = ")
    failed=$(pgbench_field "$out" "number of failed transactions: ")
    tx=$(pgbench_field "$out" "number of transactions actually processed: ")
    conn=$(pgbench_field "$out" "average connection time = ")
    if [ "$rc" -ne 0 ] || [ -z "$tps" ] || [ -z "$tx" ]; then
        pglib_log "pgbench against $tgt failed (exit $rc)"
        pglib_tail "$out" 10
        add_result "$sc" "$tgt" tps ERR
        printf '  round %d/%d  %-14s %-14s  ERR\n' "$round" "$ROUNDS" "$sc" "$tgt"
        return 0
    fi
    if [ -n "$pid" ]; then
        if t1=$(pglib_cpu_ticks "$pid") && [ "$tx" -gt 0 ]; then
            cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$tx" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
            add_result "$sc" "$tgt" cpu "$cpu"
            cpu_note="  proxy CPU $cpu us/$unit"
        fi
    fi
    add_result "$sc" "$tgt" tps "$tps"
    add_result "$sc" "$tgt" lat "$lat"
    add_result "$sc" "$tgt" failed "${failed:-0}"
    if [ -n "$conn" ]; then
        add_result "$sc" "$tgt" conn "$conn"
        conn_note=$(printf '  connect %6.3f ms' "$conn")
    fi
    printf '  round %d/%d  %-14s %-14s  %-6s %10.1f  latency %7.3f ms%s  failed %s%s\n' \
        "$round" "$ROUNDS" "$sc" "$tgt" "$rate" "$tps" "$lat" "$conn_note" "${failed:-0}" "$cpu_note"
}

# What each target negotiates, checked once before the runs (and reported).
for tgt in "${TARGETS[@]}" "${TLS_TARGETS[@]}"; do
    leg_check "$tgt" || pglib_log "$tgt: ${LEGS[$tgt]}"
done

say "warming up (direct, 2 s)"
pgbench -n -S -c 4 -j 2 -T 2 -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1 ||
    pglib_die "warm-up pgbench run against PostgreSQL failed"

nruns=0
nsecs=0
for sc in "${SCENARIOS[@]}"; do
    read -r -a order <<<"$(scenario_targets "$sc")"
    nruns=$((nruns + ROUNDS * ${#order[@]}))
    nsecs=$((nsecs + ROUNDS * ${#order[@]} * ($(scenario_duration "$sc") + 1)))
done
say "running $nruns pgbench -S runs of $DURATION s (TLS: $TLS_DURATION s, -C: $CONN_DURATION s) ($ROUNDS round(s); about $nsecs s)"
started=$EPOCHSECONDS
for ((round = 1; round <= ROUNDS; round++)); do
    for sc in "${SCENARIOS[@]}"; do
        read -r -a targets <<<"$(scenario_targets "$sc")"
        order=("${targets[@]}")
        if ((round % 2 == 0)); then
            order=()
            for ((i = ${#targets[@]} - 1; i >= 0; i--)); do
                order+=("${targets[$i]}")
            done
        fi
        for tgt in "${order[@]}"; do
            run_one "$sc" "$tgt" "$round"
        done
    done
done

# The TLS instances are done: stop them, so that the second PgBouncer's pooled server
# connections do not count among the server sessions of the memory test.
for p in "$SY_TLS_PID" "$PGB_TLS_PID"; do
    if [ -n "$p" ]; then
        pglib_stop_pid "$p" TERM 10 || true
    fi
done
SY_TLS_PID=""
PGB_TLS_PID=""

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
total_elapsed=$((EPOCHSECONDS - t_script))

# ---- report ----

# compute_stats: for every R entry, in one awk pass (a few pipelines per figure cost seconds of
# fork and exec on a loaded machine), MED: the median of its numbers ("NA" if none), SUM: the sum
# of its whole numbers, CNT: how many of its values are numbers (the rounds that succeeded).
declare -A MED=() SUM=() CNT=()
compute_stats() {
    local k med sum cnt
    while IFS=$'\t' read -r k med sum cnt; do
        MED[$k]=$med
        SUM[$k]=$sum
        CNT[$k]=$cnt
    done < <(
        for k in "${!R[@]}"; do
            printf '%s\t%s\n' "$k" "${R[$k]}"
        done | awk -F '\t' '{
            n = 0; s = 0; c = 0
            m = split($2, v, " ")
            for (i = 1; i <= m; i++) {
                if (v[i] ~ /^[0-9]/) c++
                if (v[i] ~ /^[0-9]+$/) s += v[i]
                if (v[i] !~ /^[0-9]+(\.[0-9]+)?$/) continue
                # insertion sort by value, keeping the text
                for (j = n; j > 0 && a[j] + 0 > v[i] + 0; j--) a[j + 1] = a[j]
                a[j + 1] = v[i]
                n++
            }
            if (n == 0) med = "NA"
            else if (n % 2) med = a[(n + 1) / 2]
            else med = (a[n / 2] + a[n / 2 + 1]) / 2
            printf "%s\t%s\t%s\t%s\n", $1, med, s + 0, c
        }'
    )
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
    local sc tgt tps lat cpu failed runs conn label unit sy pgb dir t
    local -a targets
    local -A mtps=() mlat=() mcpu=()
    compute_stats
    echo "Switchyard benchmark: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit:     $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
    echo "host:       $(uname -srm), $(nproc) CPU(s), $(awk '/^MemTotal/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo) RAM"
    echo "versions:   $("$PG_BIN/postgres" --version), $(pgbouncer --version | head -n 1), $(pgbench --version)"
    echo "setup:      pgbench -S, scale $SCALE, $DURATION s per run ($TLS_DURATION s with TLS, $CONN_DURATION s with -C), $ROUNDS round(s), medians over rounds;"
    echo "            PostgreSQL max_connections=600 shared_buffers=256MB fsync=off ssl=on; PgBouncer pool_mode=session"
    echo "            server leg plaintext for every proxy (Switchyard server_tls = disable, PgBouncer server_tls_sslmode = disable);"
    echo "            plain runs sslmode=disable; *_tls runs sslmode=require (Switchyard client_tls = allow, PgBouncer"
    echo "            client_tls_sslmode = allow, each with the test CA's EC P-256 localhost certificate, as the server)"
    echo "            proxy CPU = utime+stime of the proxy process during the run / transactions (us per tx; with -C"
    echo "            every transaction is a connection, so us per connection)"
    echo "            -C rate = pgbench's \"tps = X (including reconnection times)\" (its only rate with -C): connections"
    echo "            per second, connection set-up included; connect = its \"average connection time\". pgbench"
    echo "            connects synchronously, so with -j 2 at most two connections are being set up at any time"
    if [ "$SKIP_SWITCHYARD" = 1 ]; then
        echo "            (Switchyard skipped: SKIP_SWITCHYARD=1)"
    fi
    echo "legs:       (one psql connection per target before the runs: psql's \\conninfo; the backend's pg_stat_ssl)"
    for tgt in "${TARGETS[@]}" "${TLS_TARGETS[@]}"; do
        printf '            %-14s %s\n' "$tgt" "${LEGS[$tgt]:-not checked}"
    done
    for sc in "${SCENARIOS[@]}"; do
        read -r -a targets <<<"$(scenario_targets "$sc")"
        label=tps
        unit=tx
        if scenario_is_conn "$sc"; then
            label=conn/s
            unit=conn
        fi
        echo ""
        echo "== $(scenario_title "$sc"): pgbench -n -S $(scenario_args "$sc") -T $(scenario_duration "$sc") =="
        if scenario_is_conn "$sc"; then
            printf '%-14s %12s %14s %13s %10s %20s %6s\n' target "$label" "latency (ms)" "connect (ms)" failed \
                "proxy CPU (us/$unit)" runs
        else
            printf '%-14s %12s %14s %10s %18s %6s\n' target "$label" "latency (ms)" failed "proxy CPU (us/$unit)" runs
        fi
        for tgt in "${targets[@]}"; do
            tps=${MED["$sc|$tgt|tps"]:-NA}
            lat=${MED["$sc|$tgt|lat"]:-NA}
            conn=${MED["$sc|$tgt|conn"]:-NA}
            failed=${SUM["$sc|$tgt|failed"]:-0}
            cpu="-"
            if target_is_proxy "$tgt"; then
                cpu=${MED["$sc|$tgt|cpu"]:-NA}
            fi
            runs=${CNT["$sc|$tgt|tps"]:-0}
            mtps[$sc|$tgt]=$tps
            mlat[$sc|$tgt]=$lat
            mcpu[$sc|$tgt]=$cpu
            if scenario_is_conn "$sc"; then
                printf '%-14s %12s %14s %13s %10s %20s %6s\n' "$tgt" "$(fmt '%.1f' "$tps")" \
                    "$(fmt '%.3f' "$lat")" "$(fmt '%.3f' "$conn")" "$failed" "$(fmt '%.2f' "$cpu")" "$runs/$ROUNDS"
            else
                printf '%-14s %12s %14s %10s %18s %6s\n' "$tgt" "$(fmt '%.1f' "$tps")" \
                    "$(fmt '%.3f' "$lat")" "$failed" "$(fmt '%.2f' "$cpu")" "$runs/$ROUNDS"
            fi
        done
        # The targets to compare: plain or TLS.
        t=""
        case "$sc" in
        tls_c16_simple | conn_tls) t=_tls ;;
        esac
        dir=${mtps[$sc|direct$t]:-}
        sy=${mtps[$sc|switchyard$t]:-}
        pgb=${mtps[$sc|pgbouncer$t]:-}
        case "$sc" in
        conn_*)
            if [ "$SKIP_SWITCHYARD" != 1 ]; then
                printf 'conn/s ratio   switchyard/pgbouncer %s   switchyard/direct %s   pgbouncer/direct %s\n' \
                    "$(ratio "$sy" "$pgb")" "$(ratio "$sy" "$dir")" "$(ratio "$pgb" "$dir")"
                printf 'proxy CPU per connection   switchyard/pgbouncer %s\n' \
                    "$(ratio "${mcpu[$sc|switchyard$t]}" "${mcpu[$sc|pgbouncer$t]}")"
            else
                printf 'conn/s ratio   pgbouncer/direct %s\n' "$(ratio "$pgb" "$dir")"
            fi
            echo "(Both proxies hand a new client a kept server connection (PgBouncer's session pool; Switchyard's"
            echo " server_pool_size, reset with DISCARD ALL) and keep it when the client leaves; direct starts a"
            echo " new PostgreSQL backend for every connection.)"
            ;;
        tls_c16_simple)
            if [ "$SKIP_SWITCHYARD" != 1 ]; then
                printf 'tps ratio   switchyard/direct %s   pgbouncer/direct %s   switchyard/pgbouncer %s\n' \
                    "$(ratio "$sy" "$dir")" "$(ratio "$pgb" "$dir")" "$(ratio "$sy" "$pgb")"
            else
                printf 'tps ratio   pgbouncer/direct %s\n' "$(ratio "$pgb" "$dir")"
            fi
            printf 'TLS/plain (vs 16 clients, -M simple) tps ratio:'
            for tgt in "${targets[@]}"; do
                printf '   %s %s' "${tgt%_tls}" "$(ratio "${mtps[$sc|$tgt]}" "${mtps[c16_simple|${tgt%_tls}]:-}")"
            done
            printf '\n'
            printf 'proxy CPU added by client TLS (us/tx):'
            for tgt in "${targets[@]}"; do
                target_is_proxy "$tgt" || continue
                printf '   %s %s' "${tgt%_tls}" \
                    "$(calc "a - b" "${mcpu[$sc|$tgt]}" "${mcpu[c16_simple|${tgt%_tls}]:-}" "%+.2f")"
            done
            printf '\n'
            ;;
        *)
            if [ "$SKIP_SWITCHYARD" != 1 ]; then
                printf 'tps ratio   switchyard/direct %s   pgbouncer/direct %s   floor/direct %s   switchyard/pgbouncer %s\n' \
                    "$(ratio "$sy" "$dir")" "$(ratio "$pgb" "$dir")" \
                    "$(ratio "${mtps[$sc|floor]}" "$dir")" "$(ratio "$sy" "$pgb")"
            else
                printf 'tps ratio   pgbouncer/direct %s\n' "$(ratio "$pgb" "$dir")"
            fi
            ;;
        esac
        if [ "$sc" = c1_simple ]; then
            printf 'added latency vs direct (us):'
            for tgt in "${targets[@]}"; do
                [ "$tgt" = direct ] && continue
                printf '   %s %s' "$tgt" "$(calc "(a - b) * 1000" "${mlat[$sc|$tgt]}" "${mlat[$sc|direct]}" "%+.1f")"
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
    echo "total benchmark time: ${elapsed} s (${total_elapsed} s with set-up)"
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
