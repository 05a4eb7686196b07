#!/usr/bin/env bash
# Issue 13: a pause bounded by --timeout, write-ahead records of every database change, and a
# start that does not route to the wrong side. One replicated pair, reused throughout.
#
#  1. green frozen whole (SIGSTOP on every process) at the start of each step (drain, fence,
#     catchup, sequences, switch; SWITCHYARD_TEST_STOP_AT=cutover:STEP:before holds the driver
#     there, SWITCHYARD_TEST_GO_FILE lets it go on) with --timeout 2000 under pgbench TPC-B and
#     the writer: aborted, the longest transaction pgbench saw and the report's max pause within
#     about 2 s, still on blue, blue writable; the clean-up on green finishes once it answers.
#  2. switchyard killed (SIGKILL) at each step of a cutover, and of a rollback, under the
#     writer: after the restart exactly one side lets the application log in, replication runs
#     from it to the other, no stray slot, publication or subscription, every acknowledged id on
#     the live side.
#  3. the state file deleted after a cutover: the restarted switchyard does not route to blue
#     (logins refused, naming green), and routes to green once the config says so.
set -euo pipefail
: "${SY_BIN_DIR:?run through ctest}" "${SY_SOURCE_DIR:?run through ctest}"
src=$SY_SOURCE_DIR
# shellcheck source=tests/support/checks.sh
. "$src/tests/support/checks.sh"
checks_init cutover_wal

bash "$src/tests/support/pg_cluster.sh" start "$T/pg" >/dev/null
bash "$src/tests/support/pg_replicate.sh" logical "$T/pg" shop >/dev/null
# shellcheck disable=SC1091
. "$T/pg/env"
PSQL=$PG_BIN/psql
PGBENCH=$PG_BIN/pgbench
blue() { "$PSQL" -X -At -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop -c "$1"; }
green() { "$PSQL" -X -At -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d shop -c "$1"; }
side_sql() { if [ "$1" = blue ]; then blue "$2"; else green "$2"; fi; }
port_of() { if [ "$1" = blue ]; then echo "$BLUE_PORT"; else echo "$GREEN_PORT"; fi; }
other() { if [ "$1" = blue ]; then echo green; else echo blue; fi; }

sy_prepare "$APP_USER" "$APP_PASSWORD"
write_ini() { # write_ini ACTIVE
    cat >"$W/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $W/admin.sock
log_level = info
auth_type = scram-sha-256
auth_file = $W/users.txt
active = $1
drain_timeout = 5s
catchup_timeout = 5s
step_timeout = 5s
max_transaction_age = 60s
rollback_window = 10m
rollback_window_expiry = keep
reverse_replication = auto
health_interval = 1s
state_file = $W/state/sy.state
$(sy_sides "$BLUE_PORT" "$GREEN_PORT" shop)
INI
}
mkdir -p "$W/state"
write_ini blue
export PGPASSWORD=$APP_PASSWORD
APP="host=127.0.0.1 port=$port user=$APP_USER dbname=shop"
green_pids() { local pm; pm=$(head -n 1 "$GREEN_DATA/postmaster.pid"); echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"; }
wait_log() { # wait_log PATTERN SECONDS
    for _ in $(seq $(($2 * 20))); do grep -q "$1" "$W/sy.log" && return 0; sleep 0.05; done
    return 1
}
restart_sy() { # restart_sy [HOOK]: SIGTERM (or whatever killed it), then start with HOOK
    if [ -n "$sy_pid" ] && kill -0 "$sy_pid" 2>/dev/null; then kill -TERM "$sy_pid"; wait "$sy_pid" || true; fi
    sy_pid=
    : >"$W/sy.log"
    if [ -n "${1:-}" ]; then
        SWITCHYARD_TEST_STOP_AT=$1 SWITCHYARD_TEST_GO_FILE=$W/go start_sy
    else
        start_sy
    fi
}
# settled: no pending record left, nothing refused: the restart's recovery is done.
settled() {
    for _ in $(seq 200); do
        ! grep -q '"pending"' "$W/state/sy.state" 2>/dev/null && ctl --json status >/dev/null 2>&1 &&
            ! grep -q 'not undone yet' <(tail -n 3 "$W/sy.log") && return 0
        sleep 0.1
    done
    return 1
}
# can_login SIDE: the application role logs into SIDE directly.
can_login() { "$PSQL" -X -Atq "host=127.0.0.1 port=$(port_of "$1") user=$APP_USER dbname=shop" -c "select 1" >/dev/null 2>&1; }
# replicates FROM: a row written on FROM reaches the other side within 10 s.
replicates() {
    local o mark=$RANDOM$RANDOM
    o=$(other "$1")
    side_sql "$1" "insert into acks(id) values (-$mark)" >/dev/null
    for _ in $(seq 100); do
        [ "$(side_sql "$o" "select count(*) from acks where id = -$mark")" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}
# no_strays LIVE: only the replication the live side needs: the forward slot sy_sub on blue
# (whichever side is live), and switchyard_reverse (subscription on blue, publication and slot
# on green) only while a rollback window is open.
no_strays() {
    local win=$1 b g
    b=$(blue "select string_agg(slot_name, ',' order by slot_name) from pg_replication_slots")
    g=$(green "select coalesce(string_agg(slot_name, ',' order by slot_name), '') from pg_replication_slots")
    if [ "$win" = open ]; then
        [ "$b" = sy_sub -a "$g" = switchyard_reverse ] &&
            [ "$(blue "select count(*) from pg_subscription where subname = 'switchyard_reverse'")" = 1 ]
    else
        [ "$b" = sy_sub -a -z "$g" ] &&
            [ "$(blue "select count(*) from pg_subscription")$(green "select count(*) from pg_publication where pubname = 'switchyard_reverse'")" = 00 ]
    fi
}
# acked_on SIDE FILE: every id in FILE is on SIDE.
acked_on() {
    local missing
    missing=$("$PSQL" -X -q -At -h 127.0.0.1 -p "$(port_of "$1")" -U postgres -d shop -v ON_ERROR_STOP=1 <<SQL
create temp table acked_tmp(id bigint);
\copy acked_tmp from '$2'
select count(*) from acked_tmp a where not exists (select from acks k where k.id = a.id);
SQL
    )
    [ "$missing" = 0 ] || { echo "   $missing acknowledged ids missing on $1"; return 1; }
}

start_sy
for _ in $(seq 100); do ctl --json status 2>/dev/null | grep -q '"mode":"logical"' && break; sleep 0.1; done

# ---- 1. green frozen at each step, --timeout 2000 ----
next_id=1000000
for step in drain fence catchup sequences switch; do
    restart_sy "cutover:$step:before"
    "$SY_BIN_DIR/tests/writer" "$APP" "$next_id" "$W/stop.$step" >"$W/acked.freeze.$step" 2>"$W/writer.$step.err" &
    wpid=$!
    next_id=$((next_id + 1000000))
    (cd "$W" && "$PGBENCH" -n -c 4 -j 2 -T 6 --log --log-prefix="pb.$step" "$APP" >"$W/pgbench.$step" 2>&1) &
    pbpid=$!
    sleep 1
    ctl cutover --timeout 2000 >"$W/freeze.$step.out" 2>&1 &
    cpid=$!
    wait_log "test hook: the switch stopped at cutover:$step:before" 10 || true
    gp=$(green_pids)
    # shellcheck disable=SC2086
    kill -STOP $gp
    t0=$EPOCHREALTIME
    touch "$W/go"
    wait "$cpid" && rc=0 || rc=$?
    took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", (b - a) * 1000 }')
    sleep 0.5
    # shellcheck disable=SC2086
    kill -CONT $gp
    wait "$pbpid" || true
    touch "$W/stop.$step"
    wait "$wpid" && wrc=0 || wrc=$?
    maxlat=$(cat "$W"/pb."$step"* 2>/dev/null | awk '{ if ($3 > m) m = $3 } END { printf "%d", m / 1000 }')
    maxp=$(jget "$W/freeze.$step.out" max_pause_ms)
    echo "   green frozen at $step: command ${took} ms, report max_pause_ms $maxp, pgbench max latency ${maxlat} ms; $(jget "$W/freeze.$step.out" reason)"
    check "frozen at $step: the cutover aborted (exit $rc)" \
        [ "$rc" -ne 0 -a "$(jget "$W/freeze.$step.out" result)" = aborted ]
    check "... clients paused at most about 2 s (report $maxp ms, pgbench $maxlat ms)" \
        [ "${maxp:-9999}" -le 2100 -a "${maxlat:-9999}" -le 2500 ]
    check "... the command ended within about 2 s ($took ms)" [ "$took" -le 2600 ]
    check "... still on blue, blue writable through switchyard and directly, writer without error" \
        bash -c "[ \"\$('$SY_BIN_DIR/switchyardctl' -s '$W/admin.sock' --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"active\"])')\" = blue ] && '$PSQL' -X -Atq '$APP' -c 'insert into acks(id) values (-$next_id)' && '$PSQL' -X -Atq 'host=127.0.0.1 port=$BLUE_PORT user=$APP_USER dbname=shop' -c 'select 1' >/dev/null && [ $wrc -eq 0 ]"
    check "... the clean-up on green finished once it answered: nothing left, replication blue -> green runs" \
        bash -c "$(declare -f settled no_strays blue green replicates side_sql other ctl); PSQL='$PSQL' BLUE_PORT=$BLUE_PORT GREEN_PORT=$GREEN_PORT W='$W' SY_BIN_DIR='$SY_BIN_DIR'; settled && sleep 1.5 && no_strays closed && replicates blue"
    check "... every acknowledged id is on blue" acked_on blue "$W/acked.freeze.$step"
done

# ---- 2. SIGKILL at every step ----
# kill_at OP HOOK: a switch stopped at HOOK under the writer, SIGKILL, restart; prints the side
# live after the restart's recovery.
kill_at() {
    local op=$1 hook=$2
    restart_sy "$hook"
    "$SY_BIN_DIR/tests/writer" "$APP" "$next_id" "$W/stop.k" >"$W/acked.k" 2>/dev/null &
    local wpid=$!
    next_id=$((next_id + 1000000))
    sleep 0.5
    ctl "$op" >"$W/kill.out" 2>&1 &
    local cpid=$!
    wait_log "test hook: the switch stopped at $hook" 15 || echo "   (the hook $hook was not reached)"
    sleep 0.2
    kill -KILL "$sy_pid"
    wait "$sy_pid" 2>/dev/null || true
    sy_pid=
    wait "$cpid" 2>/dev/null || true
    touch "$W/stop.k"
    wait "$wpid" 2>/dev/null || true
    rm -f "$W/stop.k"
    cat "$W/acked.k" >>"$W/acked.all"
    cp "$W/sy.log" "$W/sy.killed.$op.${hook//:/_}.log"
    restart_sy
    settled || echo "   (the recovery did not settle)"
    sleep 1.5
}
# after_kill HOOK EXPECTED_LIVE WINDOW OTHER_FENCED: the checks after a restart. Before the
# first cutover green was never fenced (a subscriber nothing routes to): the other side's login
# is then as it was before the switch (OTHER_FENCED no); after a cutover blue is fenced (yes).
after_kill() {
    local hook=$1 live=$2 win=$3 fenced=$4 o act want
    o=$(other "$live")
    act=$(active)
    [ "$fenced" = yes ] && want='! can_login' || want='can_login'
    check "killed at $hook: routes to $live ($act); $live lets the application log in, $o is as before the switch (fenced: $fenced)" \
        bash -c "[ '$act' = '$live' ] && $(declare -f can_login port_of); PSQL='$PSQL' BLUE_PORT=$BLUE_PORT GREEN_PORT=$GREEN_PORT APP_USER=$APP_USER; can_login $live && $want $o"
    check "... replication runs from $live to $o" replicates "$live"
    check "... nothing left behind (rollback window $win)" no_strays "$win"
    check "... every acknowledged id is on $live" acked_on "$live" "$W/acked.all"
}
: >"$W/acked.all"
for hook in cutover:check cutover:warm cutover:drain cutover:fence:before cutover:fence \
    cutover:catchup cutover:sequences cutover:move:before cutover:switch:before cutover:switch; do
    kill_at cutover "$hook"
    after_kill "$hook" blue closed no
done
ctl cutover >"$W/cut.out" 2>&1 && rc=0 || rc=$?
check "a cutover after all that: done" [ "$rc" -eq 0 -a "$(jget "$W/cut.out" result)" = done ]
for hook in rollback:check rollback:warm rollback:drain rollback:fence:before rollback:fence \
    rollback:catchup rollback:sequences rollback:switch:before rollback:switch; do
    kill_at rollback "$hook"
    after_kill "$hook" green open yes
done
# The switch point itself: killed right after it, the restart is on the new side.
ctl rollback >"$W/back.out" 2>&1 && rc=0 || rc=$?
check "a rollback after all that: done, blue live" [ "$rc" -eq 0 -a "$(active)" = blue ]
sleep 1
check "... blue -> green replication runs, nothing left behind" bash -c "$(declare -f replicates no_strays side_sql other blue green); PSQL='$PSQL' BLUE_PORT=$BLUE_PORT GREEN_PORT=$GREEN_PORT; replicates blue && no_strays closed"

# ---- 3. the state file lost after a cutover ----
ctl cutover >"$W/cut3.out" 2>&1 && rc=0 || rc=$?
check "cutover: done, green live" [ "$rc" -eq 0 -a "$(active)" = green ]
kill -TERM "$sy_pid"; wait "$sy_pid" || true; sy_pid=
rm -f "$W/state/sy.state"
: >"$W/sy.log"
start_sy
sleep 1
out=$("$PSQL" -X -Atq "$APP" -c "select inet_server_port()" 2>&1) && rc=0 || rc=$?
echo "   $out"
check "state file deleted, restarted with active = blue: a client is not sent to blue" \
    [ "$rc" -ne 0 -a "$out" != "$BLUE_PORT" ]
check "... it is told which side the databases say is live" grep -q 'say green is live' <<<"$out"
check "... and the log says it too" grep -q 'say green is live' "$W/sy.log"
write_ini green
kill -HUP "$sy_pid"
for _ in $(seq 60); do
    [ "$("$PSQL" -X -Atq "$APP" -c "select inet_server_port()" 2>/dev/null)" = "$GREEN_PORT" ] && break
    sleep 0.1
done
check "... after active = green and a reload it routes to green" \
    [ "$("$PSQL" -X -Atq "$APP" -c "select inet_server_port()" 2>/dev/null)" = "$GREEN_PORT" ]
checks_finish
