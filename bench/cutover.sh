#!/usr/bin/env bash
# The pause clients see during a cutover: pgbench -S (16 clients) and TPC-B-like (16 clients)
# through Switchyard, one cutover in the middle of each run, on a throwaway replicated pair.
# Prints each cutover's duration, how long the proxy was paused, and the max and p99 pause the
# held sessions saw (from the cutover's own report), with and without the rollback window's
# reverse replication (prepared before the pause; only enabled at the switch point). With the
# rollback window, a rollback follows three seconds after the cutover, in the same run.
#
#   bench/cutover.sh [BUILD_DIR]      (default build/; run scripts/test.sh or build first)
#
# A script, not a timed test: the machine is shared and the figures move between runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build}
T=$(mktemp -d /tmp/sy-bench-cut-XXXXXX)
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
bash "$root/tests/support/pg_replicate.sh" logical "$T/pg" shop >/dev/null 2>&1
# shellcheck disable=SC1091
. "$T/pg/env"
printf '"%s" "%s"\n' "$APP_USER" "$APP_PASSWORD" >"$T/users.txt"
chmod 600 "$T/users.txt"
export PGPASSWORD=$APP_PASSWORD

summary() { # summary LABEL FILE: one switch's report (its last line)
    tail -n1 "$2" | python3 -c "
import json,sys
o=json.loads(sys.stdin.read())
print('%-36s result=%-7s total=%5d ms  paused=%4d ms  max_pause=%4d ms  p99_pause=%4d ms  held=%d' % (
  '$1', o.get('result'), o.get('total_ms',0), o.get('paused_ms',0), o.get('max_pause_ms',0),
  o.get('p99_pause_ms',0), o.get('sessions_held',0)))
print('   steps: ' + ' '.join('%s=%d' % (s['step'], s['ms']) for s in o.get('steps',[])) +
      '   (fence: roles %s ms, terminate %s ms)' % (o.get('fence_roles_ms','?'), o.get('fence_terminate_ms','?')))" || cat "$2"
}

run() { # run LABEL PGBENCH_ARGS REVERSE
    local label=$1 args=$2 reverse=$3 port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    rm -f "$T/admin.sock.state"
    cat >"$T/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $T/admin.sock
log_level = warn
auth_file = $T/users.txt
health_interval = 1s
rollback_window = $([ "$reverse" = off ] && echo 0 || echo 10m)
reverse_replication = $reverse
[blue]
host = 127.0.0.1
port = $BLUE_PORT
server_tls = disable
control_database = shop
[green]
host = 127.0.0.1
port = $GREEN_PORT
server_tls = disable
control_database = shop
INI
    # Each run starts from blue with blue unfenced: the previous run's state file is gone and
    # the servers are swapped back by hand below.
    setsid "$bin/switchyard" -c "$T/sy.ini" 2>"$T/sy.log" &
    sy_pid=$!
    sleep 1.5
    # shellcheck disable=SC2086
    "$PG_BIN/pgbench" -n $args -c 16 -j 2 -T 12 "host=127.0.0.1 port=$port user=$APP_USER dbname=shop" \
        >"$T/pgbench.out" 2>&1 &
    local pb=$!
    sleep 4
    "$bin/switchyardctl" -s "$T/admin.sock" cutover >"$T/cut.out" 2>&1 || true
    if [ "$reverse" != off ]; then
        sleep 3
        "$bin/switchyardctl" -s "$T/admin.sock" rollback >"$T/back.out" 2>&1 || true
    fi
    wait "$pb" || true
    summary "$label" "$T/cut.out"
    [ "$reverse" = off ] || summary "  then rollback" "$T/back.out"
    grep -E "^number of failed|^tps" "$T/pgbench.out" | sed 's/^/   pgbench: /'
    kill "$sy_pid"
    wait "$sy_pid" 2>/dev/null || true
    sy_pid=
    # Back to the start: blue unfenced and active, green subscribed again.
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop \
        -c "alter role $APP_USER login" >/dev/null
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop \
        -c "drop subscription if exists switchyard_reverse" -c "checkpoint" \
        -c "select pg_replication_slot_advance('sy_sub', pg_current_wal_flush_lsn())" >/dev/null 2>&1 || true
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d shop \
        -c "alter role $APP_USER login" \
        -c "drop publication if exists switchyard_reverse" -c "alter subscription sy_sub enable" >/dev/null 2>&1 || true
    sleep 2
}

echo "cutover pause, 16 clients, $(nproc) cores; blue and green on this machine"
run "pgbench -S, reverse_replication=off" "-S" off
run "TPC-B, reverse_replication=off" "" off
run "pgbench -S, reverse_replication=auto" "-S" auto
run "TPC-B, reverse_replication=auto" "" auto
