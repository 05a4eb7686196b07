#!/usr/bin/env bash
# Shadow coverage (issue 12, "every statement, from the first"): with shadow_sample = 1 every
# statement a session sends after login is mirrored and compared, however short the session.
# Blue and green are two servers of this test's own with the same data (no replication).
#
#  a. twenty one-statement sessions (psql -c): 20 statements compared;
#  b. one session of 40 back-to-back statements: 40 compared;
#  c. a temporary table created by a session's first statement and read by its second
#     (shadow = all): no divergence;
#  d. pgbench -C (a connection per transaction) with shadowing: at least 99 % of its
#     statements compared, and the report's coverage adds up (seen = mirrored + not sampled +
#     not running);
#  f. twenty sessions reading a portal in pieces (Execute with a row limit, Flush, Sync, as
#     cursors and JDBC's fetch size do): every statement compared, no divergence;
#  g. green's schema changed under prepared statements (a fix applied while pgbench -M prepared
#     runs): one schema_change per shadow session, then every answer matches;
#  e. reads mode: the same twenty one-statement sessions compared;
#  h. reads mode: a session's temporary table, which green refuses to create: nothing real;
#  i. with green live (active = green) the report still names blue's answer blue.
set -euo pipefail
: "${SY_BIN_DIR:?run through ctest}" "${SY_SOURCE_DIR:?run through ctest}"
src=$SY_SOURCE_DIR
# shellcheck source=tests/support/checks.sh
. "$src/tests/support/checks.sh"
checks_init shadow_coverage
trap checks_cleanup EXIT

bash "$src/tests/support/pg_cluster.sh" start "$T/pg" >/dev/null
# shellcheck disable=SC1091
. "$T/pg/env"
# shellcheck source=/dev/null # tests/support/pglib.sh
. "$src/tests/support/pglib.sh"
PSQL=$PG_BIN/psql
PGBENCH=$PG_BIN/pgbench
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
for p in "$BLUE_PORT" "$GREEN_PORT"; do
    pglib_createdb "$p" shop
    "$PGBENCH" -i -s 1 -q -h 127.0.0.1 -p "$p" -U postgres shop >"$W/pgbench-init.$p" 2>&1
done

sy_prepare postgres unused
cat >"$W/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $W/admin.sock
log_level = info
auth_type = trust
health_interval = 0
shadow = all
shadow_sample = 1
shadow_recheck = off
$(sy_sides "$BLUE_PORT" "$GREEN_PORT" shop)
INI
start_sy
APP="host=127.0.0.1 port=$port user=postgres dbname=shop"
q() { "$PSQL" -X -At "$APP" -c "$1"; }

# cov KEY: a coverage figure of a fresh report (compared, seen, mirrored, not_sampled ...).
cov() {
    ctl --json shadow report | "$PY" -c "import json,sys; print(json.load(sys.stdin)['totals']['coverage']['$1'])"
}
# divergences: the sum of every divergence class of a fresh report.
divergences() {
    ctl --json shadow report | "$PY" -c "import json,sys; print(sum(json.load(sys.stdin)['totals']['divergences'].values()))"
}
# settle N: waits (up to 10 s) until at least N statements were compared.
settle() {
    for _ in $(seq 100); do
        [ "$(cov compared)" -ge "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
reset() { ctl shadow reset >/dev/null; }

# ---- a. twenty one-statement sessions ----
reset
for i in $(seq 20); do q "select $i, count(*) from pgbench_branches" >/dev/null; done
settle 20 || true
check "a. twenty one-statement sessions: 20 compared (got $(cov compared))" [ "$(cov compared)" -eq 20 ]
check "a. no divergence" [ "$(divergences)" -eq 0 ]

# ---- b. one session of 40 back-to-back statements ----
reset
for i in $(seq 40); do echo "select $i, abalance from pgbench_accounts where aid = $i;"; done >"$W/forty.sql"
"$PSQL" -X -q -At "$APP" -f "$W/forty.sql" >/dev/null
settle 40 || true
check "b. 40 back-to-back statements in one session: 40 compared (got $(cov compared))" [ "$(cov compared)" -eq 40 ]
check "b. no divergence" [ "$(divergences)" -eq 0 ]

# ---- c. a temporary table from the first statement ----
reset
"$PSQL" -X -q -At "$APP" >/dev/null <<'SQL'
create temp table t1 as select g from generate_series(1, 5) g;
select sum(g) from t1;
SQL
settle 2 || true
check "c. temporary table created first and read second: both compared" [ "$(cov compared)" -eq 2 ]
check "c. no divergence" [ "$(divergences)" -eq 0 ]

# ---- d. pgbench -C ----
reset
"$PGBENCH" -n -C -S -c 4 -t 100 "$APP" >"$W/pb.C" 2>&1
sleep 1
seen=$(cov seen)
compared=$(cov compared)
check "d. pgbench -C: $compared of $seen statements compared (at least 99 %)" \
    [ "$seen" -ge 400 -a "$((compared * 100))" -ge "$((seen * 99))" ]
sum=$(($(cov mirrored) + $(cov not_sampled) + $(cov not_running)))
check "d. coverage adds up: seen $seen = mirrored + not sampled + not running ($sum)" [ "$sum" -eq "$seen" ]
check "d. no divergence" [ "$(divergences)" -eq 0 ]

# ---- f. a portal read in pieces (Execute with a row limit, Flush, then Sync) ----
reset
ok_rows=0
for i in $(seq 20); do
    n=$("$PY" "$src/tests/support/pg_cursor_client.py" 127.0.0.1 "$port" postgres shop \
        "select g, md5(g::text) from generate_series(1, 25) g" 10 || true)
    [ "$n" = 25 ] && ok_rows=$((ok_rows + 1))
done
settle 20 || true
check "f. 20 sessions reading a portal 10 rows at a time: every one got its 25 rows ($ok_rows)" [ "$ok_rows" -eq 20 ]
check "f. ... 20 compared (got $(cov compared)), no divergence ($(divergences))" \
    [ "$(cov compared)" -eq 20 -a "$(divergences)" -eq 0 ]

# ---- g. a schema change on green under prepared statements ----
# green's migration made names.name varchar(10) where blue has varchar(20): every answer differs
# in the column's type. The fix is applied on green while pgbench runs prepared statements on
# it: each shadow session sees "cached plan must not change result type" once (schema_change),
# restarts and prepares them again, and from then on its answers match.
"$PSQL" -X -q -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop -c \
    "create table names (id int primary key, name varchar(20)); insert into names select g, 'n' || g from generate_series(1, 5) g"
"$PSQL" -X -q -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d shop -c \
    "create table names (id int primary key, name varchar(10)); insert into names select g, 'n' || g from generate_series(1, 5) g"
printf '\\set id random(1, 5)\nselect id, name from names where id = :id;\n' >"$W/names.sql"
reset
"$PGBENCH" -n -M prepared -f "$W/names.sql" -c 4 -T 7 "$APP" >"$W/pb.names" 2>&1 &
pb_pid=$!
sleep 2
"$PSQL" -X -q -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d shop -c \
    "alter table names alter column name type varchar(20)"
sleep 2
ctl --json shadow report >"$W/report.fix.json"
reset
wait "$pb_pid" && rc=0 || rc=$?
check "g. pgbench -M prepared through the fix on green: exit $rc" [ "$rc" -eq 0 ]
div() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['totals']['divergences']['$2'])" "$1"; }
sc=$(div "$W/report.fix.json" schema_change)
check "g. the schema change shows once per shadow session: schema_change $sc (1 to 8 for 4 clients)" \
    [ "$sc" -ge 1 -a "$sc" -le 8 ]
ctl --json shadow report >"$W/report.after.json"
check "g. after the fix: compared $(cov compared), no divergence of any class ($(divergences))" \
    [ "$(cov compared)" -gt 0 -a "$(divergences)" -eq 0 ]

# ---- e. reads mode ----
ctl shadow on reads >/dev/null
reset
for i in $(seq 20); do q "select $i, count(*) from pgbench_branches" >/dev/null; done
settle 20 || true
check "e. reads mode: twenty one-statement sessions, 20 compared (got $(cov compared))" [ "$(cov compared)" -eq 20 ]
check "e. no divergence" [ "$(divergences)" -eq 0 ]

# ---- h. reads mode: a session's temporary table (green refuses to create it) ----
reset
"$PSQL" -X -q -At "$APP" >/dev/null 2>&1 <<'SQL'
create temp table scratch (x int);
insert into scratch values (1), (2);
select sum(x) from scratch;
update scratch set x = x + 1;
select count(*) from scratch;
drop table scratch;
SQL
settle 6 || true
real=$(ctl --json shadow report | "$PY" -c "import json,sys; print(json.load(sys.stdin)['totals']['divergences']['real'])")
check "h. reads mode, a temporary table created, written, read and dropped: 6 compared ($(cov compared)), none real ($real)" \
    [ "$(cov compared)" -eq 6 -a "$real" -eq 0 ]

# ---- i. names: with green live (active = green), the report still calls blue's answer blue ----
"$PSQL" -X -q -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop -c \
    "create table labels (id int, v text); insert into labels values (1, 'blue-value')"
"$PSQL" -X -q -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d shop -c \
    "create table labels (id int, v text); insert into labels values (1, 'green-value')"
port2=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s|^listen = .*|listen = 127.0.0.1:$port2|" -e "s|^admin_socket = .*|admin_socket = $W/admin2.sock|" \
    -e "s|^shadow = .*|shadow = all\nactive = green\nstate_file = $W/state2.json|" "$W/sy.ini" >"$W/sy2.ini"
"$SY_BIN_DIR/switchyard" -c "$W/sy2.ini" 2>>"$W/sy2.log" &
sy2_pid=$!
bg_pids+=("$sy2_pid")
for _ in $(seq 100); do [ -S "$W/admin2.sock" ] && break; sleep 0.05; done
"$PSQL" -X -At "host=127.0.0.1 port=$port2 user=postgres dbname=shop" -c "select v from labels" >"$W/labels.out"
sleep 0.5
"$SY_BIN_DIR/switchyardctl" -s "$W/admin2.sock" --json shadow report >"$W/report.labels.json"
ex=$("$PY" -c "
import json, sys
r = json.load(open(sys.argv[1]))
f = next(f for f in r['fingerprints'] if 'labels' in f['fingerprint'])
e = f['examples']['real']
print(e['blue'], e['green'])" "$W/report.labels.json" 2>/dev/null || true)
check "i. green live: the client got green's answer ($(cat "$W/labels.out"))" [ "$(cat "$W/labels.out")" = green-value ]
check "i. green live: the report's example names blue's value blue and green's green ($ex)" \
    [ "$ex" = "'blue-value' 'green-value'" ]
kill "$sy2_pid" 2>/dev/null || true

check "switchyard is still running" kill -0 "$sy_pid"
check "its log has no sanitizer report" bash -c "! grep -q -e AddressSanitizer -e 'runtime error' '$W/sy.log'"
checks_finish
