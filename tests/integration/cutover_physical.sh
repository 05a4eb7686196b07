#!/usr/bin/env bash
# Cutover to a physical standby, under load: green is a streaming replica of blue
# (tests/support/pg_replicate.sh physical), so the catch-up step waits for its replay of blue's
# final position and promotes it. pgbench (16 clients) and a writer that records every
# acknowledged id run through the cutover. Then: zero failed transactions and writer errors, every
# acknowledged id on the promoted standby, pgbench's balances consistent there, the standby out
# of recovery and open to the application role (the fence came along in the shared catalog and
# was lifted on it), blue fenced, and no rollback window (a promoted standby has no way back).
set -euo pipefail
: "${SY_BIN_DIR:?run through ctest}" "${SY_SOURCE_DIR:?run through ctest}"
src=$SY_SOURCE_DIR
# shellcheck source=tests/support/checks.sh
. "$src/tests/support/checks.sh"
checks_init physical

bash "$src/tests/support/pg_cluster.sh" start "$T/pg" >/dev/null
# The database, role and tables on blue (logical set-up, whose green side is not used here), then
# a streaming standby of blue that has all of it.
bash "$src/tests/support/pg_replicate.sh" logical "$T/pg" shop >/dev/null
bash "$src/tests/support/pg_replicate.sh" physical "$T/pg" >/dev/null
# shellcheck disable=SC1091
. "$T/pg/env"
PSQL=$PG_BIN/psql
blue() { "$PSQL" -X -At -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop -c "$1"; }
standby() { "$PSQL" -X -At -h 127.0.0.1 -p "$STANDBY_PORT" -U postgres -d shop -c "$1"; }

sy_prepare "$APP_USER" "$APP_PASSWORD"
cat >"$W/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $W/admin.sock
log_level = info
auth_file = $W/users.txt
drain_timeout = 5s
catchup_timeout = 10s
step_timeout = 30s
health_interval = 1s
rollback_window = 10m
$(sy_sides "$BLUE_PORT" "$STANDBY_PORT" shop)
INI
start_sy
for _ in $(seq 100); do
    ctl --json status 2>/dev/null | grep -q '"mode":"physical"' && break
    sleep 0.1
done
check "status shows green as a physical standby of blue" \
    bash -c "'$SY_BIN_DIR/switchyardctl' -s '$W/admin.sock' --json status | grep -q '\"mode\":\"physical\"'"

export PGPASSWORD=$APP_PASSWORD
APP="host=127.0.0.1 port=$port user=$APP_USER dbname=shop"
"$SY_BIN_DIR/tests/writer" "$APP" 1 "$W/stop" >"$W/acked.txt" 2>"$W/writer.err" &
writer_pid=$!
"$PG_BIN/pgbench" -n -M prepared -c 16 -j 2 -T 12 "$APP" >"$W/pgbench.out" 2>&1 &
pb_pid=$!
bg_pids+=("$pb_pid")
sleep 4
ctl cutover >"$W/cut.out" 2>&1 && rc=0 || rc=$?
last=$(tail -n 1 "$W/cut.out")
echo "   cutover: $last"
check "cutover to the physical standby under load exits 0 with result done" \
    bash -c "[ $rc -eq 0 ] && grep -q '\"result\":\"done\"' <<<'$last'"
check "... green is active" \
    bash -c "'$SY_BIN_DIR/switchyardctl' -s '$W/admin.sock' --json status | grep -q '\"active\":\"green\"'"
check "... the standby was promoted (out of recovery)" [ "$(standby "select pg_is_in_recovery()")" = f ]
check "... no rollback window (no reverse replication from a promoted standby)" \
    bash -c "! grep -q rollback_window_until <<<'$last'"
check "... blue refuses $APP_USER (fenced)" \
    bash -c "! '$PSQL' -X -Atq 'host=127.0.0.1 port=$BLUE_PORT user=$APP_USER dbname=shop' -c 'select 1' 2>/dev/null"
check "... the promoted standby lets $APP_USER in directly (its copy of the fence was lifted)" \
    bash -c "'$PSQL' -X -Atq 'host=127.0.0.1 port=$STANDBY_PORT user=$APP_USER dbname=shop' -c 'select 1' >/dev/null"

wait "$pb_pid" || true
touch "$W/stop"
wait "$writer_pid" && rc=0 || rc=$?
check "the writer saw no error ($(wc -l <"$W/acked.txt") inserts acknowledged)" \
    [ "$rc" -eq 0 -a ! -s "$W/writer.err" ]
nfail=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$W/pgbench.out")
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/pgbench.out")
check "pgbench: $processed transactions, ${nfail:-?} failed" [ "${processed:-0}" -gt 0 -a "${nfail:-1}" = 0 ]
"$PSQL" -X -q -h 127.0.0.1 -p "$STANDBY_PORT" -U postgres -d shop -v ON_ERROR_STOP=1 <<SQL >/dev/null
create temp table acked(id bigint);
\copy acked from '$W/acked.txt'
create table ack_check as select (select count(*) from acked) n,
    (select count(*) from acked a where not exists (select from acks k where k.id = a.id)) missing;
SQL
check "every acknowledged id is on the promoted standby ($(standby "select n from ack_check") acked, $(standby "select missing from ack_check") missing)" \
    [ "$(standby "select missing from ack_check")" = 0 -a "$(standby "select n from ack_check")" -gt 0 ]
bal=$(standby "select (select sum(abalance) from pgbench_accounts) = (select sum(bbalance) from pgbench_branches)
    and (select sum(bbalance) from pgbench_branches) = (select sum(tbalance) from pgbench_tellers)
    and (select sum(tbalance) from pgbench_tellers) = (select coalesce(sum(delta), 0) from pgbench_history)")
check "pgbench's balances are consistent on the promoted standby" [ "$bal" = t ]

checks_finish
