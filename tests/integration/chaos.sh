#!/usr/bin/env bash
# Chaos clients (issue 11: one client must never take the proxy down). On a replicated pair of
# its own (blue publishes, green subscribes: tests/support/pg_replicate.sh), ~40 clients of
# tests/integration/chaos.c run for ~40 s through one switchyard, each picking at random among
# well-behaved actions whose answers are checked (queries, a slow reader, a half-close, a
# pipelined burst, a cancel, COPY out, a COPY in ended by CopyFail) and abusive ones (a 20 MB
# result or a COPY abandoned by Terminate, close, RST, garbage or a half-close; a login cut
# short). Meanwhile: a pause and resume, a pause that ends by its own timeout, two reloads
# (SIGHUP) and a cutover to green.
#
# It passes when switchyard is still up and answering, every well-behaved client got the right
# answers, the cutover is done, switchyard's log has no sanitizer report (it is stopped at the
# end so that LeakSanitizer runs), and its descriptors and memory came back to the baseline
# taken after a warm-up.
#
# CHAOS_SEED=N replays a run (the seed is printed first, and again after a failure);
# CHAOS_CLIENTS and CHAOS_SECONDS change the load (defaults 40 and 40).
set -euo pipefail
: "${SY_BIN_DIR:?run through ctest}" "${SY_SOURCE_DIR:?run through ctest}"
src=$SY_SOURCE_DIR
# shellcheck source=tests/support/checks.sh
. "$src/tests/support/checks.sh"
# shellcheck source=tests/support/pglib.sh
. "$src/tests/support/pglib.sh"
checks_init chaos

seed=${CHAOS_SEED:-$(( ($(date +%s%N) / 1000) % 1000000000000 ))}
clients=${CHAOS_CLIENTS:-40}
seconds=${CHAOS_SECONDS:-40}
echo "chaos.sh: seed $seed (replay: CHAOS_SEED=$seed ctest -R integration_chaos)"

bash "$src/tests/support/pg_cluster.sh" start "$T/pg" >/dev/null
bash "$src/tests/support/pg_replicate.sh" logical "$T/pg" shop >/dev/null
# shellcheck disable=SC1091
. "$T/pg/env"
PSQL=$PG_BIN/psql

# The application role logs into switchyard with trust (the chaos clients' raw sockets then need
# no SCRAM); switchyard logs into the servers with the password from the auth file. Pooling is
# off, so every server connection ends with its session and the descriptors come back exactly.
sy_prepare "$APP_USER" "$APP_PASSWORD"
mkdir -p "$W/state"
cat >"$W/sy.ini" <<INI
[switchyard]
listen = 127.0.0.1:$port
admin_socket = $W/admin.sock
log_level = info
auth_type = trust
auth_file = $W/users.txt
server_pool_size = 0
drain_timeout = 15s
catchup_timeout = 5s
step_timeout = 10s
max_transaction_age = 60s
shutdown_grace = 3s
rollback_window = 0
reverse_replication = off
health_interval = 1s
state_file = $W/state/switchyard.state
$(sy_sides "$BLUE_PORT" "$GREEN_PORT" shop)
INI

start_sy
for _ in $(seq 100); do
    ctl --json status 2>/dev/null | grep -q '"mode":"logical"' && break
    sleep 0.1
done
check "switchyard is up and sees the logical replication blue -> green" \
    bash -c "'$SY_BIN_DIR/switchyardctl' -s '$W/admin.sock' --json status | grep -q '\"mode\":\"logical\"'"

APP="host=127.0.0.1 port=$port user=$APP_USER dbname=shop"
fds_now() { find "/proc/$sy_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# fds: switchyard's open descriptors, the least of 10 looks 0.1 s apart: a health probe's socket
# (health_interval = 1s) comes and goes, a leaked descriptor stays in every look.
fds() {
    local n min=
    for _ in $(seq 10); do
        n=$(fds_now)
        [ -n "$min" ] && [ "$min" -le "$n" ] || min=$n
        sleep 0.1
    done
    echo "$min"
}
fd_list() { ls -l "/proc/$sy_pid/fd" 2>/dev/null | sed -n 's/.* -> //p' | sort | uniq -c; }
# The warm-up: a few seconds of the same chaos (another seed), so that every allocator arena,
# thread and control connection exists before the baseline.
"$SY_BIN_DIR/tests/chaos" --seed "$((seed + 1))" --clients 8 --seconds 3 --port "$port" \
    --user "$APP_USER" --dbname shop >"$W/warmup.out" 2>&1 || true
sleep 1.5
# sanitizer_report: the first sanitizer report in switchyard's log, if any.
sanitizer_report() {
    grep -m1 -A40 -E 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error' "$W/sy.log" || true
}
if ! pglib_pid_alive "$sy_pid"; then
    not_ok "switchyard survived the warm-up (3 s of chaos, seed $((seed + 1)), 8 clients)"
    grep -E '^chaos: (FAIL|seed|[0-9]+ passed)' "$W/warmup.out" | head -n 20 || true
    sanitizer_report
    echo "chaos.sh: failed with seed $seed; the warm-up ran with --seed $((seed + 1)) --clients 8 --seconds 3"
    checks_finish
fi
base_fds=$(fds)
base_rss=$(pglib_rss_kb "$sy_pid")
fd_list >"$W/fds.base"
echo "   baseline after the warm-up: $base_fds descriptors, RSS $((base_rss / 1024)) MB"

# ---- the chaos, and the operator's commands while it runs ----
# From here on every outcome is a check: a switchyard that died must not end the script early.
set +e
"$SY_BIN_DIR/tests/chaos" --seed "$seed" --clients "$clients" --seconds "$seconds" \
    --port "$port" --user "$APP_USER" --dbname shop >"$W/chaos.out" 2>&1 &
chaos_pid=$!
bg_pids+=("$chaos_pid")
t0=$SECONDS
at() { # at SECOND: sleeps until that second of the chaos run
    local d=$(($1 - (SECONDS - t0)))
    [ "$d" -le 0 ] || sleep "$d"
}

at 4
ctl --json pause --timeout 5000 >"$W/pause1.out" 2>&1 && rc=0 || rc=$?
sleep 1.5
ctl --json resume >"$W/resume1.out" 2>&1 && rc2=0 || rc2=$?
check "pause --timeout 5000 under chaos: paused ($(tail -n1 "$W/pause1.out"))" \
    [ "$rc" -eq 0 -a "$(jget "$W/pause1.out" result)" = paused ]
check "... resume: resumed ($(tail -n1 "$W/resume1.out"))" \
    [ "$rc2" -eq 0 -a "$(jget "$W/resume1.out" result)" = resumed ]

at 9
kill -HUP "$sy_pid"
for _ in $(seq 50); do
    [ "$(grep -c 'config reloaded' "$W/sy.log")" -ge 1 ] && break
    sleep 0.1
done
check "a reload (SIGHUP) under chaos" [ "$(grep -c 'config reloaded' "$W/sy.log")" -ge 1 ]

at 13
ctl cutover --timeout 15000 >"$W/cutover.out" 2>&1 && rc=0 || rc=$?
check "cutover under chaos: exits 0, result done" [ "$rc" -eq 0 -a "$(jget "$W/cutover.out" result)" = done ]
echo "   cutover: $(tail -n1 "$W/cutover.out")"
check "... green is active" [ "$(active)" = green ]

at 24
ctl --json pause --timeout 1500 >"$W/pause2.out" 2>&1 && rc=0 || rc=$?
check "a pause on green that ends by its own timeout: paused" \
    [ "$rc" -eq 0 -a "$(jget "$W/pause2.out" result)" = paused ]
for _ in $(seq 50); do
    ctl --json status | grep -q '"paused":false' && break
    sleep 0.1
done
check "... and it ended by itself" bash -c "'$SY_BIN_DIR/switchyardctl' -s '$W/admin.sock' --json status | grep -q '\"paused\":false'"

at 30
kill -HUP "$sy_pid"
for _ in $(seq 50); do
    [ "$(grep -c 'config reloaded' "$W/sy.log")" -ge 2 ] && break
    sleep 0.1
done
check "a second reload on green" [ "$(grep -c 'config reloaded' "$W/sy.log")" -ge 2 ]

wait "$chaos_pid" && rc=0 || rc=$?
grep -E '^chaos: (FAIL|seed|cancels|slowest|[a-z_]+ +[0-9]+ runs|[0-9.]+ s,|[0-9]+ passed)' "$W/chaos.out" |
    head -n 60 | sed 's/^/   /' || true
check "every well-behaved chaos client got the right answers (chaos exit $rc)" [ "$rc" -eq 0 ]

# ---- afterwards ----
check "switchyard is still running" pglib_pid_alive "$sy_pid"
check "... and answers status" ctl status
check "... and a query (on green)" \
    [ "$("$PSQL" -X -Atq "$APP" -c "select inet_server_port()")" = "$GREEN_PORT" ]
for _ in $(seq 10); do # the last sessions finish closing
    [ "$(fds)" -le "$base_fds" ] && break
done
end_fds=$(fds)
fd_list >"$W/fds.end"
check "descriptors back to the baseline ($base_fds before, $end_fds after)" [ "$end_fds" -le "$base_fds" ]
[ "$end_fds" -le "$base_fds" ] || diff "$W/fds.base" "$W/fds.end" | head -n 20 || true
end_rss=$(pglib_rss_kb "$sy_pid")
# 64 MB over the baseline. AddressSanitizer keeps freed memory in its quarantine (so that a use
# after free is caught) up to quarantine_size_mb, 256 by default, plus its shadow (1/8): in a
# sanitizer build that much more is resident by design once enough was freed. The warm-up fills
# only part of it.
allow_mb=64
if grep -qa __asan_init "$SY_BIN_DIR/switchyard"; then
    q=$(sed -n 's/.*quarantine_size_mb=\([0-9]*\).*/\1/p' <<<"${ASAN_OPTIONS:-}")
    allow_mb=$((64 + ${q:-256} * 9 / 8))
fi
check "resident memory within $allow_mb MB of the baseline ($((base_rss / 1024)) MB before, $((${end_rss:-0} / 1024)) MB after)" \
    [ "${end_rss:-999999999}" -lt $((base_rss + allow_mb * 1024)) ]

# Stop it, so that LeakSanitizer (in a sanitizer build) has its say.
kill -TERM "$sy_pid"
wait "$sy_pid" && rc=0 || rc=$?
sy_pid=
check "switchyard exits 0 on SIGTERM (exit $rc)" [ "$rc" -eq 0 ]
for what in AddressSanitizer LeakSanitizer "runtime error"; do
    check "its log has no '$what'" bash -c "! grep -q '$what' '$W/sy.log'"
done
sanitizer_report
[ "$failed" -eq 0 ] || echo "chaos.sh: failed with seed $seed (replay: CHAOS_SEED=$seed ctest -R integration_chaos)"
checks_finish
