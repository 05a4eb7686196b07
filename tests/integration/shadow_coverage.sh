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
#  e. reads mode: the same twenty one-statement sessions compared.
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

# ---- e. reads mode ----
ctl shadow on reads >/dev/null
reset
for i in $(seq 20); do q "select $i, count(*) from pgbench_branches" >/dev/null; done
settle 20 || true
check "e. reads mode: twenty one-statement sessions, 20 compared (got $(cov compared))" [ "$(cov compared)" -eq 20 ]
check "e. no divergence" [ "$(divergences)" -eq 0 ]

check "switchyard is still running" kill -0 "$sy_pid"
check "its log has no sanitizer report" bash -c "! grep -q -e AddressSanitizer -e 'runtime error' '$W/sy.log'"
checks_finish
