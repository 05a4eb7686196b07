#!/usr/bin/env bash
# Shadow classes under write load (issue 12, docs/shadow.md "Replication lag, proved"), on a
# logically replicated pair of its own (tests/support/pg_replicate.sh: pgbench tables on blue,
# subscription sy_sub on green), switchyard with shadow = reads.
#
#  a. a broken migration on green: view acct loses every seventh account (aid % 7 = 0), and
#     prices.amount is numeric(10,4) where blue's is numeric(10,2) (logical replication applies
#     '43.29' into it as 43.2900). pgbench TPC-B at full speed through switchyard (16 clients)
#     while readers query the view and the column (simple protocol, and -M prepared for the
#     column): once the lag checks have drained, at least 95 % of those divergences are real
#     and none is replication_lag.
#  b. the same sides made identical (the view fixed, the scale set back on green), the same
#     write load, readers also reading the rows TPC-B writes (branches, tellers): no divergence
#     is real; the lag-caused ones end replication_lag or inconclusive, and some are proved lag.
set -euo pipefail
: "${SY_BIN_DIR:?run through ctest}" "${SY_SOURCE_DIR:?run through ctest}"
src=$SY_SOURCE_DIR
# shellcheck source=tests/support/checks.sh
. "$src/tests/support/checks.sh"
checks_init shadow_lag

bash "$src/tests/support/pg_cluster.sh" start "$T/pg" >/dev/null
bash "$src/tests/support/pg_replicate.sh" logical "$T/pg" shop >/dev/null
# shellcheck disable=SC1091
. "$T/pg/env"
PSQL=$PG_BIN/psql
PGBENCH=$PG_BIN/pgbench
PY=python3
blue() { "$PSQL" -X -At -h 127.0.0.1 -p "$BLUE_PORT" -U postgres -d shop -c "$1"; }
green() { "$PSQL" -X -At -h 127.0.0.1 -p "$GREEN_PORT" -U postgres -d shop -c "$1"; }
side_sql() { "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d shop; }

# The migration: prices is new on both sides (blue publishes every table; green copies it once
# its subscription is refreshed), the view differs on green.
side_sql "$BLUE_PORT" <<SQL
CREATE TABLE prices (id int PRIMARY KEY, amount numeric(10,2));
INSERT INTO prices SELECT g, g + 0.29 FROM generate_series(1, 200) g;
CREATE VIEW acct AS SELECT aid, bid, abalance FROM pgbench_accounts;
GRANT SELECT ON prices, acct TO $APP_USER;
SQL
side_sql "$GREEN_PORT" <<SQL
CREATE TABLE prices (id int PRIMARY KEY, amount numeric(10,4));
CREATE VIEW acct AS SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid % 7 <> 0;
GRANT SELECT ON prices, acct TO $APP_USER;
ALTER SUBSCRIPTION sy_sub REFRESH PUBLICATION;
SQL
for _ in $(seq 300); do
    [ "$(green "SELECT count(*) FROM prices")" = 200 ] &&
        [ "$(green "SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel")" = t ] && break
    sleep 0.1
done
check "green copied prices into its numeric(10,4) column: $(green "SELECT amount FROM prices WHERE id = 43") (blue $(blue "SELECT amount FROM prices WHERE id = 43"))" \
    [ "$(green "SELECT amount FROM prices WHERE id = 43")/$(blue "SELECT amount FROM prices WHERE id = 43")" = 43.2900/43.29 ]

sy_prepare "$APP_USER" "$APP_PASSWORD"
cat >"$W/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $W/admin.sock
log_level = debug
auth_type = scram-sha-256
auth_file = $W/users.txt
health_interval = 0
shadow = reads
shadow_sample = 1
shadow_queue = 1MB
shadow_timeout = 5s
shadow_resume = 1s
shadow_lag_check_timeout = 5s
shadow_recheck = on
$(sy_sides "$BLUE_PORT" "$GREEN_PORT" shop)
INI
start_sy
export PGPASSWORD=$APP_PASSWORD
APP="host=127.0.0.1 port=$port user=$APP_USER dbname=shop"

report() { ctl --json shadow report >"$W/report.json"; }
# fps PREFIX PATH: PATH of every fingerprint starting with PREFIX in the last report, added up.
fps() {
    "$PY" - "$W/report.json" "$1" "$2" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
n = 0
for f in r["fingerprints"]:
    if f["fingerprint"].startswith(sys.argv[2]):
        v = f
        for k in sys.argv[3].split("."):
            v = v.get(k, 0) if isinstance(v, dict) else 0
        n += v or 0
print(n)
EOF
}
tot() {
    "$PY" - "$W/report.json" "$1" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))["totals"]
for k in sys.argv[2].split("."):
    v = v.get(k, 0) if isinstance(v, dict) else 0
print(v)
EOF
}
# drained: waits until no lag check is waiting or running (inconclusive stops changing and the
# checks run stay the same for 3 s), at most 60 s.
drained() {
    local last="" now i stable=0
    for i in $(seq 120); do
        report
        now="$(tot lag_checks.run)/$(tot divergences.inconclusive)"
        if [ "$now" = "$last" ]; then
            stable=$((stable + 1))
            [ "$stable" -ge 6 ] && return 0
        else
            stable=0
        fi
        last=$now
        sleep 0.5
    done
}
# load SECONDS: pgbench TPC-B at full speed through switchyard, and the readers, for SECONDS.
load() {
    local s=$1
    "$PGBENCH" -n -c 16 -j 2 -T "$s" "$APP" >"$W/pb.tpcb" 2>&1 &
    local tpcb=$!
    "$PGBENCH" -n -c 1 -R 60 -T "$s" -f "$W/reader.sql" "$APP" >"$W/pb.reader" 2>&1 &
    local r1=$!
    "$PGBENCH" -n -M prepared -c 1 -R 40 -T "$s" -f "$W/reader_prepared.sql" "$APP" >"$W/pb.prepared" 2>&1 &
    local r2=$!
    bg_pids+=("$tpcb" "$r1" "$r2")
    wait "$tpcb" "$r1" "$r2" || true
}
summary() {
    echo "# $1: $(tot divergences.real) real, $(tot divergences.replication_lag) replication_lag, $(tot divergences.inconclusive) inconclusive, $(tot divergences.nondeterministic) nondeterministic; lag checks run $(tot lag_checks.run), inconclusive $(tot lag_checks.inconclusive), dropped $(tot lag_checks.dropped), uncheckable $(tot lag_checks.uncheckable); tpcb $(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$W/pb.tpcb" | head -1) tps"
}

# ---- a. the broken migration under write load ----
cat >"$W/reader.sql" <<'SQL'
\set n random(1, 199990)
select aid, abalance from acct where aid between :n and :n + 9;
\set p random(1, 200)
select id, amount from prices where id = :p;
SQL
cat >"$W/reader_prepared.sql" <<'SQL'
\set p random(1, 200)
select id, amount from prices where id = :p;
SQL
ctl shadow reset >/dev/null
load 20
drained
summary "a (broken view and scale)"
V='select aid, abalance from acct'
P='select id, amount from prices where id = ?'
PX='select id, amount from prices where id = $1'
for f in "$V" "$P" "$PX"; do
    real=$(fps "$f" divergences.real)
    lag=$(fps "$f" divergences.replication_lag)
    inc=$(fps "$f" divergences.inconclusive)
    all=$((real + lag + inc))
    echo "# [$f]: $all divergences: $real real, $lag replication_lag, $inc inconclusive"
    check "[$f]: divergences seen ($all)" [ "$all" -ge 100 ]
    check "[$f]: at least 95 % real ($real of $all)" [ $((real * 100)) -ge $((all * 95)) ]
    check "[$f]: none replication_lag ($lag)" [ "$lag" = 0 ]
done
check "pgbench TPC-B ran without errors through switchyard" grep -q '^number of failed transactions: 0 ' "$W/pb.tpcb"

# ---- b. identical sides, the same load: nothing real ----
side_sql "$GREEN_PORT" <<'SQL'
CREATE OR REPLACE VIEW acct AS SELECT aid, bid, abalance FROM pgbench_accounts;
ALTER TABLE prices ALTER COLUMN amount TYPE numeric(10,2);
SQL
cat >"$W/reader.sql" <<'SQL'
\set n random(1, 199990)
select aid, abalance from acct where aid between :n and :n + 9;
select bid, bbalance from pgbench_branches order by bid;
\set t random(1, 20)
select tid, tbalance from pgbench_tellers where tid = :t;
SQL
cat >"$W/reader_prepared.sql" <<'SQL'
\set t random(1, 20)
select tid, tbalance from pgbench_tellers where tid = :t;
select id, amount from prices where id = :t;
SQL
ctl shadow reset >/dev/null
load 20
drained
summary "b (identical sides)"
check "identical sides under write load: no real divergence ($(tot divergences.real))" [ "$(tot divergences.real)" = 0 ]
check "... and lag was seen and proved: $(tot divergences.replication_lag) replication_lag" [ "$(tot divergences.replication_lag)" -ge 1 ]
check "... every lag candidate was checked or counted ($(tot lag_checks.run) checks)" [ "$(tot lag_checks.run)" -ge 1 ]
check "no sanitizer report in the log" bash -c "! grep -q 'Sanitizer' '$W/sy.log'"
checks_finish
