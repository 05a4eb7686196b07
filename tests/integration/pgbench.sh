#!/usr/bin/env bash
# pgbench (TPC-B-like, with writes) through switchyard in simple, extended and prepared modes:
# every run must process transactions and fail none. psql runs a script through it too.
set -euo pipefail
: "${SY_TEST_ENV:?run through ctest}" "${SY_BIN_DIR:?run through ctest}"
# shellcheck disable=SC1090
. "$SY_TEST_ENV"
dir=$(mktemp -d /tmp/sy-pgbench-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/sy.ini" <<INI
[switchyard]
protocol = postgres
listen = 127.0.0.1:$port
admin_socket = $dir/admin.sock
log_level = warn
auth_type = trust
[blue]
host = $BLUE_HOST
port = $BLUE_PORT
[green]
host = $GREEN_HOST
port = $GREEN_PORT
INI
"$SY_BIN_DIR/switchyard" -c "$dir/sy.ini" 2> "$dir/sy.log" &
sy_pid=$!
cleanup() { kill "$sy_pid" 2>/dev/null || true; wait "$sy_pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 100); do
  [ -S "$dir/admin.sock" ] && break
  sleep 0.05
done
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=app
pgbench="$PG_BIN/pgbench"
"$pgbench" -i -s 2 -q >/dev/null 2>&1 || { echo "pgbench -i through switchyard failed"; cat "$dir/sy.log"; exit 1; }
fail=0
for mode in simple extended prepared; do
  out=$("$pgbench" -M "$mode" -c 8 -j 2 -T 4 2>&1) || { echo "$out"; echo "pgbench -M $mode exited non-zero"; fail=1; continue; }
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
  echo "pgbench -M $mode: processed=$processed failed=${failed:-?} tps=$tps"
  if [ -z "$processed" ] || [ "$processed" -eq 0 ] || [ "${failed:-1}" != 0 ]; then
    echo "$out"; fail=1
  fi
done
# The data pgbench wrote through the proxy is really on blue, and consistent: pgbench's balance
# invariant (each run truncates pgbench_history, so accounts, tellers and branches are compared).
sum=$("$PG_BIN/psql" -h "$BLUE_HOST" -p "$BLUE_PORT" -U postgres -d app -Atc \
  "select a = b and b = t and a <> 0 from (select (select sum(abalance) from pgbench_accounts) a,
     (select sum(bbalance) from pgbench_branches) b, (select sum(tbalance) from pgbench_tellers) t) s")
echo "balances consistent: $sum"
[ "$sum" = t ] || fail=1
# psql with a multi-statement script and a \copy.
out=$("$PG_BIN/psql" -v ON_ERROR_STOP=1 -Atq <<'SQL'
create temp table t (a int);
\copy t from program 'seq 1 1000'
select count(*), sum(a) from t;
SQL
) || fail=1
echo "psql: $out"
[ "$out" = "1000|500500" ] || fail=1
kill -TERM "$sy_pid"
wait "$sy_pid" || { echo "switchyard exited non-zero on SIGTERM"; fail=1; }
if grep -E 'ERROR' "$dir/sy.log"; then fail=1; fi
if [ "$fail" -ne 0 ]; then echo "FAILED"; cat "$dir/sy.log"; exit 1; fi
echo "1 passed, 0 failed"
