#!/usr/bin/env bash
# The checks before anything is paused or fenced, and a rollback window that can really roll
# back (issue 13), on a replicated pair of this test's own, under pgbench TPC-B and the writer
# (tests/integration/writer.c) through switchyard the whole time. The forward subscription is
# owned by a role of its own on green (sub_owner) and connects to blue as a replication role of
# its own (sy_repl), as a real set-up would have it.
#
#  0. the forward replication fails (green has a NOT NULL column blue does not send): status's
#     replication.error and the log name the column, the check step refuses with it; it clears
#     once fixed.
#  1. a sequence only on blue: cutover --dry-run and cutover refuse it in the check step, naming
#     it; blue is never fenced.
#  2. green's migration added a NOT NULL column (with a default, so that the forward replication
#     still applies): the cutover is refused in the check step naming the column (the window's
#     reverse replication would stop at its first row on blue); with reverse_replication = off
#     the dry run passes (it logs every session into green for real). After the column is added
#     on blue too (expand), the cutover passes.
#  3. the reverse replication breaks during the window (a NOT NULL column without a default added
#     on blue): status says rollback_possible false within seconds, naming the column, the log
#     says "rollback not possible", and rollback refuses with the reason; once it is fixed,
#     rollback is possible again.
#  4. rollback, cutover, rollback with no manual step in between (the fence leaves sub_owner and
#     sy_repl able to log in); every acknowledged write is on blue, pgbench's balances agree, no
#     client saw an error.
#  Throughout: status labels each replication with the direction it really runs (its
#  subscription named: sy_sub blue -> green, switchyard_reverse green -> blue in the window), and
#  shows each side's fence as its database reports it beside the state file's record; a role
#  given LOGIN back by hand on fenced blue shows as fenced false, fence_mismatch, and a warning in
#  the log, until it is NOLOGIN again.
set -euo pipefail
: "${SY_BIN_DIR:?run through ctest}" "${SY_SOURCE_DIR:?run through ctest}"
src=$SY_SOURCE_DIR
# shellcheck source=tests/support/checks.sh
. "$src/tests/support/checks.sh"
checks_init cutover-checks

bash "$src/tests/support/pg_cluster.sh" start "$T/pg" >/dev/null
bash "$src/tests/support/pg_replicate.sh" logical "$T/pg" shop >/dev/null
# shellcheck disable=SC1091
. "$T/pg/env"
PSQL=$PG_BIN/psql
PGBENCH=$PG_BIN/pgbench
blue() { "$PSQL" -X -At -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop -c "$1"; }
green() { "$PSQL" -X -At -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d shop -c "$1"; }

# Replication's own roles: the subscription's owner on green, the role it connects as on blue.
blue "create role sy_repl login replication password 'repl-secret'" >/dev/null
green "create role sub_owner login superuser" >/dev/null
green "alter subscription sy_sub connection 'host=127.0.0.1 port=$BLUE_PORT user=sy_repl password=repl-secret dbname=shop'" >/dev/null
green "alter subscription sy_sub owner to sub_owner" >/dev/null
for _ in $(seq 100); do
    [ "$(blue "select count(*) from pg_stat_replication where usename = 'sy_repl'")" = 1 ] && break
    sleep 0.1
done
check "the forward subscription streams as sy_repl, owned by sub_owner" \
    [ "$(blue "select count(*) from pg_stat_replication where usename = 'sy_repl'")" = 1 ]

sy_prepare "$APP_USER" "$APP_PASSWORD"
cat >"$W/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $W/admin.sock
log_level = info
auth_type = scram-sha-256
auth_file = $W/users.txt
drain_timeout = 5s
catchup_timeout = 3s
step_timeout = 5s
max_transaction_age = 60s
rollback_window = 10m
reverse_replication = auto
health_interval = 1s
state_file = $W/state/switchyard.state
$(sy_sides "$BLUE_PORT" "$GREEN_PORT" shop)
INI
mkdir -p "$W/state"

export PGPASSWORD=$APP_PASSWORD
APP="host=127.0.0.1 port=$port user=$APP_USER dbname=shop"
start_sy
for _ in $(seq 100); do
    ctl --json status | grep -q '"mode":"logical"' && break
    sleep 0.1
done

# sw KEY: a key of status's "switch" object (python's repr: True, False, None).
sw() { ctl --json status | python3 -c "import json,sys; print(json.load(sys.stdin)['switch'].get('$1'))"; }
# side SIDE KEY: a key of status's sides.SIDE (python's repr).
side() { ctl --json status | python3 -c "import json,sys; print(json.load(sys.stdin)['sides']['$1'].get('$2'))"; }
# repl_label KEY: "from->to subscription" of status's replication or reverse_replication ("-"
# when status has none).
repl_label() { ctl --json status | python3 -c "
import json,sys
r = json.load(sys.stdin).get('$1')
print('%s->%s %s' % (r['from'], r['to'], r.get('subscription')) if r else '-')"; }
# wait_fence SIDE WANT: until status's sides.SIDE.fenced is WANT (True/False), up to 10 s.
wait_fence() { for _ in $(seq 50); do [ "$(side "$1" fenced)" = "$2" ] && break; sleep 0.2; done; }
# steps FILE: the steps a switch's report lists, space-separated.
steps() { tail -n1 "$1" | python3 -c 'import json,sys; print(" ".join(s["step"] for s in json.load(sys.stdin)["steps"]))'; }
# reason FILE: the refusal of the report (reason) or of the command (error).
reason() { tail -n1 "$1" | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o.get("reason") or o.get("error") or "")'; }
blue_login() { "$PSQL" -X -Atq "host=127.0.0.1 port=$BLUE_PORT user=$APP_USER dbname=shop" -c "select 1" >/dev/null 2>&1; }
set_conf() { # set_conf KEY VALUE: in the config, then a reload
    sed -i "s/^$1 = .*/$1 = $2/" "$W/sy.ini"
    kill -HUP "$sy_pid"
    sleep 0.3
}

# ---- before any cutover: labels and fences as the databases report them ----
wait_fence blue False
check "before a cutover: status's replication is blue->green sy_sub ($(repl_label replication)), no reverse_replication ($(repl_label reverse_replication))" \
    [ "$(repl_label replication)" = "blue->green sy_sub" -a "$(repl_label reverse_replication)" = - ]
check "... blue and green not fenced, from their databases and as recorded ($(side blue fenced)/$(side blue fence_recorded), $(side green fenced)/$(side green fence_recorded))" \
    [ "$(side blue fenced)$(side blue fence_recorded)$(side green fenced)$(side green fence_recorded)" = FalseFalseFalseFalse ]

# ---- the load, through switchyard, for the whole test ----
"$SY_BIN_DIR/tests/writer" "$APP" 1 "$W/stop" >"$W/acked.txt" 2>"$W/writer.err" &
writer_pid=$!
"$PGBENCH" -n -c 4 -j 2 -T 75 "$APP" >"$W/pgbench.out" 2>&1 &
pgbench_pid=$!
bg_pids+=("$writer_pid" "$pgbench_pid")
sleep 2

# ---- 0. the forward replication fails: status says why ----
# A NOT NULL column without a default on green that blue does not send: every insert into acks
# replicated from blue fails on green. Status names the column (not "not streaming"), and the
# check step refuses the cutover with it.
green "alter table acks add column g2 integer not null default 0; alter table acks alter column g2 drop default" >/dev/null
for _ in $(seq 50); do ctl --json status | grep -q 'public.acks.g2' && break; sleep 0.2; done
err=$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["replication"].get("error", ""))')
check "forward replication broken by green's NOT NULL column: status's replication.error names it" \
    grep -q 'column public.acks.g2 is NOT NULL without a default on green' <<<"$err"
check "... and the log says so" grep -q 'replication blue -> green fails: .*public.acks.g2' "$W/sy.log"
ctl cutover >"$W/fwd.out" 2>&1 && rc=0 || rc=$?
check "... the cutover is refused in the check step, naming it" \
    bash -c "[ $rc -ne 0 ] && tail -n1 '$W/fwd.out' | grep -q '\"reason\":\"check: .*column public.acks.g2 is NOT NULL without a default on green'"
green "alter table acks drop column g2" >/dev/null
for _ in $(seq 150); do
    [ -z "$(ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["replication"].get("error", ""))')" ] && break
    sleep 0.2
done
check "fixed on green: the error clears (the apply worker caught up)" \
    bash -c "grep -q 'replication blue -> green works again' '$W/sy.log'"

# ---- 1. a sequence only on blue ----
blue "create sequence only_blue as integer; select nextval('only_blue')" >/dev/null
ctl cutover --dry-run >"$W/seq_dry.out" 2>&1 && rc=0 || rc=$?
check "a sequence only on blue: the dry run refuses it, naming it" \
    bash -c "[ $rc -ne 0 ] && grep -q 'sequence public.only_blue is on blue but not on green' '$W/seq_dry.out'"
echo "   $(reason "$W/seq_dry.out")"
ctl cutover >"$W/seq.out" 2>&1 && rc=0 || rc=$?
check "... the cutover refuses it in the check step, before anything is fenced" \
    bash -c "[ $rc -ne 0 ] && tail -n1 '$W/seq.out' | grep -q '\"reason\":\"check: sequences: .*public.only_blue'"
check "... no pause, no fence (steps: $(steps "$W/seq.out"))" [ "$(steps "$W/seq.out")" = "check restore" ]
blue_login && in=yes || in=no
check "... $APP_USER logs into blue directly ($in), blue is active" [ "$in" = yes -a "$(active)" = blue ]
blue "drop sequence only_blue" >/dev/null

# ---- 2. green's migration added a NOT NULL column ----
green "alter table acks add column note integer not null default 0" >/dev/null
ctl cutover --dry-run >"$W/col_dry.out" 2>&1 && rc=0 || rc=$?
check "green has acks.note NOT NULL: the dry run refuses, naming the column" \
    bash -c "[ $rc -ne 0 ] && grep -q 'column public.acks.note (integer) is on green but not on blue' '$W/col_dry.out'"
ctl cutover >"$W/col.out" 2>&1 && rc=0 || rc=$?
check "... the cutover refuses in the check step (the window's reverse replication)" \
    bash -c "[ $rc -ne 0 ] && tail -n1 '$W/col.out' | grep -q '\"reason\":\"check: schema (the rollback window.s reverse replication green -> blue).*public.acks.note'"
echo "   $(reason "$W/col.out")"
blue_login && in=yes || in=no
check "... no pause, no fence (steps: $(steps "$W/col.out")), $APP_USER logs into blue ($in)" \
    [ "$(steps "$W/col.out")" = "check restore" -a "$in" = yes ]
set_conf reverse_replication off
ctl cutover --dry-run >"$W/col_off.out" 2>&1 && rc=0 || rc=$?
check "... with reverse_replication = off the dry run passes" [ "$rc" -eq 0 -a "$(jget "$W/col_off.out" result)" = ok ]
check "... and it logged every session into green for real (sessions_logged_in $(jget "$W/col_off.out" sessions_logged_in) >= 5)" \
    [ "$(jget "$W/col_off.out" sessions_logged_in)" -ge 5 ]
check "... its steps were check and warm, nothing paused ($(steps "$W/col_off.out"), max pause $(jget "$W/col_off.out" max_pause_ms))" \
    [ "$(steps "$W/col_off.out")" = "check warm" -a "$(jget "$W/col_off.out" paused_ms)" = 0 ]
set_conf reverse_replication auto
# Expand: the column on blue too; then the cutover passes and the window is open.
blue "alter table acks add column note integer not null default 0" >/dev/null
ctl cutover --dry-run >"$W/dry_ok.out" 2>&1 && rc=0 || rc=$?
check "the column on blue too: the dry run passes" [ "$rc" -eq 0 ]
[ "$rc" -eq 0 ] || tail -n1 "$W/dry_ok.out"
ctl cutover >"$W/cut1.out" 2>&1 && rc=0 || rc=$?
check "... the cutover is done, green active" [ "$rc" -eq 0 -a "$(active)" = green ]
echo "   cutover 1: $(tail -n1 "$W/cut1.out" | cut -c1-300)"
check "... the report says the reverse replication was checked" \
    bash -c "tail -n1 '$W/cut1.out' | grep -q rollback_check"
for _ in $(seq 50); do [ "$(sw rollback_possible)" = True ] && break; sleep 0.2; done
check "... status: rollback_possible" [ "$(sw rollback_possible)" = True ]
check "... status's window end is a time (rollback_window_until $(sw rollback_window_until), $(sw rollback_window_left_s) s left)" \
    python3 -c "
import datetime, sys
u = datetime.datetime.strptime('$(sw rollback_window_until)', '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.timezone.utc)
left = (u - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
sys.exit(0 if 580 <= left <= 601 and abs(left - $(sw rollback_window_left_s)) <= 3 else 1)"

# ---- in the window: labels, and blue's fence as its database reports it ----
wait_fence blue True
check "in the window: replication is green->blue switchyard_reverse ($(repl_label replication)), reverse_replication blue->green sy_sub ($(repl_label reverse_replication))" \
    [ "$(repl_label replication)" = "green->blue switchyard_reverse" -a "$(repl_label reverse_replication)" = "blue->green sy_sub" ]
check "... blue fenced from its database and as recorded ($(side blue fenced)/$(side blue fence_recorded)), green not ($(side green fenced)/$(side green fence_recorded))" \
    [ "$(side blue fenced)$(side blue fence_recorded)$(side green fenced)$(side green fence_recorded)" = TrueTrueFalseFalse ]
blue "alter role $APP_USER login" >/dev/null
wait_fence blue False
check "$APP_USER given LOGIN on blue by hand: status says blue is not fenced ($(side blue fenced)), while the record says it is ($(side blue fence_recorded))" \
    [ "$(side blue fenced)$(side blue fence_recorded)" = FalseTrue ]
mismatch=$(side blue fence_mismatch)
echo "   $mismatch"
check "... fence_mismatch names the role" grep -q "can log in to blue ($APP_USER)" <<<"$mismatch"
check "... and the log warns" grep -q "fence: the state file records a fence on blue, but its database says it is not fenced: .*$APP_USER" "$W/sy.log"
blue "alter role $APP_USER nologin" >/dev/null
wait_fence blue True
check "... NOLOGIN again: fenced again, no mismatch, the log says they agree" \
    bash -c "[ '$(side blue fenced)' = True -a '$(side blue fence_mismatch)' = None ] && grep -q 'fence: blue is fenced, as the state file records' '$W/sy.log'"

# ---- 3. the reverse replication breaks in the window ----
t0=$EPOCHREALTIME
blue "alter table acks add column must integer not null default 0; alter table acks alter column must drop default" >/dev/null
for _ in $(seq 100); do [ "$(sw rollback_possible)" = False ] && break; sleep 0.1; done
t1=$EPOCHREALTIME
check "a NOT NULL column added on blue in the window: status says rollback impossible within $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s" \
    [ "$(sw rollback_possible)" = False ]
why=$(sw rollback_not_possible)
echo "   $why"
check "... naming the column" grep -q 'public.acks.must' <<<"$why"
check "... the log says 'rollback not possible' with it" grep -q 'rollback not possible: .*public.acks.must' "$W/sy.log"
ctl rollback >"$W/back_refused.out" 2>&1 && rc=0 || rc=$?
check "... rollback refuses with the reason" \
    bash -c "[ $rc -ne 0 ] && grep -q 'rollback not possible: .*public.acks.must' '$W/back_refused.out'"
check "... and changed nothing: green active" [ "$(active)" = green ]
blue "alter table acks drop column must" >/dev/null
for _ in $(seq 150); do [ "$(sw rollback_possible)" = True ] && break; sleep 0.2; done
check "fixed on blue: rollback possible again" [ "$(sw rollback_possible)" = True ]
check "... the log says so" grep -q 'rollback possible again' "$W/sy.log"

# ---- 4. rollback, cutover, rollback: no manual step ----
ctl rollback >"$W/back1.out" 2>&1 && rc=0 || rc=$?
check "rollback is done, blue active" [ "$rc" -eq 0 -a "$(active)" = blue ]
[ "$rc" -eq 0 ] || tail -n1 "$W/back1.out"
check "... green's fence left sub_owner able to log in (the forward subscription's owner)" \
    [ "$(green "select rolcanlogin from pg_roles where rolname = 'sub_owner'")" = t ]
for _ in $(seq 100); do
    [ "$(green "select count(*) from pg_stat_subscription where subname = 'sy_sub' and pid is not null")" = 1 ] && break
    sleep 0.1
done
check "... the forward subscription's apply worker runs again" \
    [ "$(green "select count(*) from pg_stat_subscription where subname = 'sy_sub' and pid is not null")" = 1 ]
wait_fence green True
check "... after the rollback: replication is blue->green sy_sub again ($(repl_label replication)), no reverse_replication ($(repl_label reverse_replication))" \
    [ "$(repl_label replication)" = "blue->green sy_sub" -a "$(repl_label reverse_replication)" = - ]
check "... green fenced from its database and as recorded ($(side green fenced)/$(side green fence_recorded)), blue not ($(side blue fenced)/$(side blue fence_recorded))" \
    [ "$(side green fenced)$(side green fence_recorded)$(side blue fenced)$(side blue fence_recorded)" = TrueTrueFalseFalse ]
sleep 1.5
ctl cutover >"$W/cut2.out" 2>&1 && rc=0 || rc=$?
check "cutover again, with no manual step: done" [ "$rc" -eq 0 -a "$(active)" = green ]
[ "$rc" -eq 0 ] || tail -n1 "$W/cut2.out"
check "... blue's fence left sy_repl able to log in (the forward replication's role)" \
    [ "$(blue "select rolcanlogin from pg_roles where rolname = 'sy_repl'")" = t ]
check "... and took LOGIN from $APP_USER" [ "$(blue "select rolcanlogin from pg_roles where rolname = '$APP_USER'")" = f ]
for _ in $(seq 50); do [ "$(sw rollback_possible)" = True ] && break; sleep 0.2; done
ctl rollback >"$W/back2.out" 2>&1 && rc=0 || rc=$?
check "rollback again: done, blue active" [ "$rc" -eq 0 -a "$(active)" = blue ]
[ "$rc" -eq 0 ] || tail -n1 "$W/back2.out"

# ---- the load's outcome ----
wait "$pgbench_pid" || true
touch "$W/stop"
for _ in $(seq 100); do kill -0 "$writer_pid" 2>/dev/null || break; sleep 0.1; done
wait "$writer_pid" && rc=0 || rc=$?
check "the writer saw no error ($(wc -l <"$W/acked.txt") inserts acknowledged)" [ "$rc" -eq 0 -a ! -s "$W/writer.err" ]
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/pgbench.out")
nfail=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$W/pgbench.out")
check "pgbench TPC-B: $processed transactions, ${nfail:-?} failed" [ "${processed:-0}" -gt 0 -a "${nfail:-1}" = 0 ]
[ "${nfail:-1}" = 0 ] || tail -n 20 "$W/pgbench.out"
"$PSQL" -X -q -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop -v ON_ERROR_STOP=1 <<SQL >/dev/null
create temp table acked(id bigint);
\copy acked from '$W/acked.txt'
create table ack_check as select (select count(*) from acked) n,
    (select count(*) from acked a where not exists (select from acks k where k.id = a.id)) missing;
SQL
check "every acknowledged id is on blue ($(blue "select n from ack_check") acked, $(blue "select missing from ack_check") missing)" \
    [ "$(blue "select missing from ack_check")" = 0 -a "$(blue "select n from ack_check")" -gt 0 ]
bal=$(blue "select (select sum(abalance) from pgbench_accounts) = (select sum(bbalance) from pgbench_branches)
    and (select sum(bbalance) from pgbench_branches) = (select sum(tbalance) from pgbench_tellers)
    and (select sum(tbalance) from pgbench_tellers) = (select coalesce(sum(delta), 0) from pgbench_history)")
check "pgbench's balances are consistent on blue" [ "$bal" = t ]
checks_finish
