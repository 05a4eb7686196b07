#!/usr/bin/env bash
# The README's demo: builds Switchyard, starts a throwaway blue/green pair of PostgreSQL 15
# servers, runs pgbench through Switchyard and shows what the admin socket reports.
#
#   scripts/demo.sh
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

step "Starting two throwaway PostgreSQL 15 servers: blue (live now) and green (its successor)"
tests/support/pg_cluster.sh start "$WORK/pg"
# shellcheck source=/dev/null # written by pg_cluster.sh: BLUE_PORT, GREEN_PORT, ...
. "$WORK/pg/env"

step "Creating pgbench's tables (scale 1) in database app on blue and on green"
for side in blue green; do
    host_var=${side^^}_HOST
    port_var=${side^^}_PORT
    if ! pgbench -i -q -s 1 -h "${!host_var}" -p "${!port_var}" -U postgres app >"$WORK/init.$side.out" 2>&1; then
        cat "$WORK/init.$side.out" >&2
        pglib_die "pgbench -i failed on $side"
    fi
    echo "$side: $(tail -n 1 "$WORK/init.$side.out")"
done

SY_PORT=$(pglib_free_port "$BLUE_PORT" "$GREEN_PORT")
SOCK=$WORK/sy.sock
step "Writing $WORK/switchyard.ini: listen on 127.0.0.1:$SY_PORT, blue :$BLUE_PORT, green :$GREEN_PORT"
cat >"$WORK/switchyard.ini" <<EOF
[switchyard]
protocol = postgres
listen = 127.0.0.1:$SY_PORT
admin_socket = $SOCK
auth_type = trust
log_level = info

[blue]
host = $BLUE_HOST
port = $BLUE_PORT

[green]
host = $GREEN_HOST
port = $GREEN_PORT
EOF
cat "$WORK/switchyard.ini"

step "Starting Switchyard in the background (log: $WORK/switchyard.log)"
build/switchyard -c "$WORK/switchyard.ini" >"$WORK/switchyard.log" 2>&1 &
SY_PID=$!
if ! pglib_wait_port 127.0.0.1 "$SY_PORT" 10 "$SY_PID"; then
    pglib_die "Switchyard is not accepting connections on 127.0.0.1:$SY_PORT"
fi
echo "Switchyard (pid $SY_PID) accepts connections on 127.0.0.1:$SY_PORT"

step "Running pgbench through Switchyard: 4 clients, 2 threads, 5 seconds (the clients reach blue)"
pgbench -c 4 -j 2 -T 5 -h 127.0.0.1 -p "$SY_PORT" -U postgres app \
    >"$WORK/pgbench.out" 2>"$WORK/pgbench.err" &
PGBENCH_PID=$!
# Take the client list while the sessions are open; it is shown after the summary.
sleep 2
build/switchyardctl -s "$SOCK" clients >"$WORK/clients.out" 2>&1 || true
if ! wait "$PGBENCH_PID"; then
    PGBENCH_PID=""
    cat "$WORK/pgbench.err" >&2
    pglib_die "pgbench through Switchyard failed"
fi
PGBENCH_PID=""

step "pgbench's summary"
cat "$WORK/pgbench.out"

step "switchyardctl -s $SOCK status"
build/switchyardctl -s "$SOCK" status

step "switchyardctl -s $SOCK clients (taken while pgbench was running)"
cat "$WORK/clients.out"

# ---- PLACEHOLDER: shadow report ---------------------------------------------------------------
# Later work: send a copy of the read traffic to green while blue serves it, then show the
# comparison (matching / differing results, latency) with switchyardctl's shadow report here.
# ---- END PLACEHOLDER: shadow report -----------------------------------------------------------

# ---- PLACEHOLDER: cutover ---------------------------------------------------------------------
# Later work: run pgbench in the background, cut over from blue to green with switchyardctl
# (pause, drain, switch, resume), and show that the clients kept running with no errors.
# ---- END PLACEHOLDER: cutover -----------------------------------------------------------------

# ---- PLACEHOLDER: flip-back -------------------------------------------------------------------
# Later work: switch back from green to blue the same way and show the status afterwards.
# ---- END PLACEHOLDER: flip-back ---------------------------------------------------------------

step "Stopping Switchyard with SIGTERM"
pglib_stop_pid "$SY_PID" TERM 30
SY_PID=""

step "Stopping the blue and green servers and removing $WORK"
tests/support/pg_cluster.sh stop "$WORK/pg"
rm -rf -- "$WORK"
WORK=""

step "Demo finished"
