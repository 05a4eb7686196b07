#!/usr/bin/env bash
# One client must never take the proxy down (issue 11): each probe that found a hole is a check.
#
# - admin numbers: negative, overflowing and junk --timeout and shadow sample values are refused
#   with exit 2 by switchyardctl, and by the daemon itself when sent raw; the proxy is not paused
#   and a query goes through;
# - a second daemon on the same admin_socket (or the same state_file) refuses to start, naming
#   the path and the first one's pid; the first still answers; a stale socket is replaced;
# - switchyardctl against a socket whose server closes at once: exit 1 with a message, never
#   SIGPIPE (141);
# - a config line that would echo a secret (auth_password: Secret) is refused by --check and by
#   a SIGHUP reload without printing it, and the daemon keeps running.
#
# Runs under ctest with the pg fixture (SY_TEST_ENV, SY_BIN_DIR, SY_SOURCE_DIR).
set -uo pipefail
: "${SY_TEST_ENV:?run through ctest}" "${SY_BIN_DIR:?run through ctest}" "${SY_SOURCE_DIR:?run through ctest}"
# shellcheck disable=SC1090
. "$SY_TEST_ENV"
# shellcheck disable=SC1091
. "$SY_SOURCE_DIR/tests/support/checks.sh"
checks_init robustness

sy_prepare app secret
sy_config() { # sy_config LISTEN_PORT ADMIN_SOCKET STATE_FILE [EXTRA LINE]
    printf '[switchyard]\nlisten = 127.0.0.1:%s\nadmin_socket = %s\nstate_file = %s\nauth_type = trust\nlog_level = info\n%s\n' \
        "$1" "$2" "$3" "${4:-}"
    printf '[blue]\nhost = %s\nport = %s\nserver_tls = disable\n' "$BLUE_HOST" "$BLUE_PORT"
    printf '[green]\nhost = %s\nport = %s\nserver_tls = disable\n' "$GREEN_HOST" "$GREEN_PORT"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sy_config "$port" "$W/admin.sock" "$W/sy.state" >"$W/sy.ini"
start_sy
check "switchyard started" ctl status

# ---- admin numbers ----
paused() { ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["paused"])'; }
query() { timeout 5 "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc 'select 42' 2>&1; }
# ctl_rc EXPECTED_RC NEEDLE ARGS...: switchyardctl exits EXPECTED_RC and says NEEDLE on stderr.
ctl_rc() {
    local want=$1 needle=$2 rc
    shift 2
    ctl "$@" >"$W/ctl.out" 2>"$W/ctl.err" && rc=0 || rc=$?
    if [ "$rc" -ne "$want" ] || ! grep -qF -- "$needle" "$W/ctl.err"; then
        echo "  switchyardctl $* exited $rc (wanted $want); stderr: $(cat "$W/ctl.err")"
        return 1
    fi
}
check "pause --timeout -5: exit 2, naming --timeout and its range" \
    ctl_rc 2 "--timeout takes a whole number of milliseconds from 1 to 86400000" pause --timeout -5
check "pause --timeout 99999999999999999999 (overflow): exit 2" \
    ctl_rc 2 "from 1 to 86400000" pause --timeout 99999999999999999999
check "pause --timeout 5s (junk): exit 2" ctl_rc 2 "not '5s'" pause --timeout 5s
check "pause --timeout 0: exit 2" ctl_rc 2 "from 1 to" pause --timeout 0
check "pause --timeout with no value: exit 2" ctl_rc 2 "needs a value" pause --timeout
check "cutover --timeout -1: exit 2" ctl_rc 2 "cutover: --timeout" cutover --timeout -1
check "rollback --timeout 18446744073709551616: exit 2" ctl_rc 2 "rollback: --timeout" \
    rollback --timeout 18446744073709551616
check "shadow sample -0.5: exit 2" ctl_rc 2 "fraction from 0 to 1" shadow sample -0.5
check "shadow sample 1e-1: exit 2" ctl_rc 2 "fraction from 0 to 1" shadow sample 1e-1
check "shadow sample 2: exit 2" ctl_rc 2 "fraction from 0 to 1" shadow sample 2
check "a newline inside an argument (a second command smuggled in): exit 2" \
    ctl_rc 2 "control byte" status $'\npause'
check "an unknown command, refused by the daemon: exit 2" ctl_rc 2 "unknown command" frobnicate
check "the proxy is not paused after the refused pauses" test "$(paused)" = False

# The daemon checks the words itself: the same requests sent raw, past switchyardctl.
raw() { # raw LINE: the daemon's reply line
    python3 - "$W/admin.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    d = s.recv(65536)
    if not d:
        break
    buf += d
print(buf.decode().strip())
PY
}
raw_usage() { # raw_usage LINE NEEDLE: an error reply of kind usage containing NEEDLE
    local r
    r=$(raw "$1")
    python3 -c 'import json,sys; o=json.loads(sys.argv[1]); sys.exit(0 if o.get("kind")=="usage" and sys.argv[2] in o.get("error","") else 1)' "$r" "$2" ||
        { echo "  reply to '$1': $r"; return 1; }
}
check "daemon: pause --timeout -5 refused (kind usage)" raw_usage "pause --timeout -5" "from 1 to 86400000"
check "daemon: pause --timeout 99999999999999999999 refused" raw_usage "pause --timeout 99999999999999999999" "from 1 to"
check "daemon: pause --timeout 12abc refused" raw_usage "pause --timeout 12abc" "not '12abc'"
check "daemon: cutover --timeout -5 refused" raw_usage "cutover --timeout -5" "cutover: --timeout"
check "daemon: shadow sample nan refused" raw_usage "shadow sample nan" "fraction from 0 to 1"
check "daemon: status with a stray word refused" raw_usage "status now" "takes no arguments"
check "the proxy is not paused after the raw requests" test "$(paused)" = False
check "a query goes through the proxy" test "$(query)" = 42
check "a valid pause --timeout 300 is taken" ctl pause --timeout 300
check "  and the proxy is paused" test "$(paused)" = True
sleep 0.8
check "  and resumes by itself" test "$(paused)" = False
check "shadow sample 0.25 is taken" ctl shadow sample 0.25

# ---- a second daemon ----
sy_config "$(free_port)" "$W/admin.sock" "$W/other.state" >"$W/sy2.ini"
timeout 10 "$SY_BIN_DIR/switchyard" -c "$W/sy2.ini" >"$W/sy2.log" 2>&1 && rc=0 || rc=$?
check "a second daemon on the same admin_socket exits non-zero" test "$rc" -ne 0 -a "$rc" -ne 124
check "  naming the admin_socket" grep -qF "admin_socket $W/admin.sock is in use" "$W/sy2.log"
check "  and the running daemon's pid" grep -qF "pid $sy_pid" "$W/sy2.log"
check "the first daemon still answers status" ctl status
check "  its socket is still there" test -S "$W/admin.sock"
sy_config "$(free_port)" "$W/third.sock" "$W/sy.state" >"$W/sy3.ini"
timeout 10 "$SY_BIN_DIR/switchyard" -c "$W/sy3.ini" >"$W/sy3.log" 2>&1 && rc=0 || rc=$?
check "a second daemon on the same state_file exits non-zero" test "$rc" -ne 0 -a "$rc" -ne 124
check "  naming the state_file and the pid" grep -qF "state_file $W/sy.state is in use by another switchyard (pid $sy_pid" "$W/sy3.log"
check "  and leaves the first one's socket alone" ctl status

# ---- a daemon that closes the connection at once ----
python3 - "$W/closer.sock" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(64)
while True:
    c, _ = s.accept()
    c.close()
PY
bg_pids+=($!)
for _ in $(seq 100); do [ -S "$W/closer.sock" ] && break; sleep 0.05; done
closed_ok() {
    local i rc
    for i in $(seq 10); do
        "$SY_BIN_DIR/switchyardctl" -s "$W/closer.sock" status >/dev/null 2>"$W/closer.err" && rc=0 || rc=$?
        if [ "$rc" -ne 1 ] || ! grep -qF "closed the connection" "$W/closer.err"; then
            echo "  try $i: exit $rc, stderr: $(cat "$W/closer.err")"
            return 1
        fi
    done
}
check "switchyardctl against a server that closes at once: exit 1 with a message, 10 times" closed_ok

# ---- config errors never echo a secret ----
sy_config "$port" "$W/admin.sock" "$W/sy.state" "auth_password: Secret" >"$W/bad.ini"
"$SY_BIN_DIR/switchyard" -c "$W/bad.ini" --check >"$W/check.out" 2>&1 && rc=0 || rc=$?
check "--check on 'auth_password: Secret' exits non-zero" test "$rc" -ne 0
check "  names the line and the fix" grep -qF "bad.ini:7:" "$W/check.out"
check "  without printing the secret" bash -c "! grep -q Secret '$W/check.out'"
for line in "control_password Secret" "Secret" "auth_password Secret = x" "[Secret x]"; do
    sy_config "$port" "$W/admin.sock" "$W/sy.state" "$line" >"$W/bad2.ini"
    "$SY_BIN_DIR/switchyard" -c "$W/bad2.ini" --check >"$W/check2.out" 2>&1 && rc=0 || rc=$?
    check "--check on '$line' fails without printing it" \
        bash -c "[ $rc -ne 0 ] && ! grep -q Secret '$W/check2.out'"
done
sy_config "$port" "$W/admin.sock" "$W/sy.state" >"$W/bad2.ini"
printf '[users]\nalice = Secret\n' >>"$W/bad2.ini"
"$SY_BIN_DIR/switchyard" -c "$W/bad2.ini" --check >"$W/check2.out" 2>&1 && rc=0 || rc=$?
check "--check on a password in [users] fails without printing it" \
    bash -c "[ $rc -ne 0 ] && ! grep -q Secret '$W/check2.out'"

cp "$W/sy.ini" "$W/sy.ini.good"
cp "$W/bad.ini" "$W/sy.ini"
kill -HUP "$sy_pid"
for _ in $(seq 100); do grep -q "reload failed" "$W/sy.log" && break; sleep 0.05; done
check "SIGHUP with the bad line logs a reload error" grep -q "reload failed.*sy.ini:7:" "$W/sy.log"
check "  without the secret" bash -c "! grep -q Secret '$W/sy.log'"
check "  and keeps running" ctl status
cp "$W/sy.ini.good" "$W/sy.ini"

# ---- a stale socket from a dead daemon is replaced ----
kill -9 "$sy_pid"
wait "$sy_pid" 2>/dev/null
check "a killed daemon leaves its socket behind" test -S "$W/admin.sock"
start_sy
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.05; done
check "a new daemon replaces the stale socket and answers" ctl status
check "  and wrote its pid into the lock file" grep -qx "$sy_pid" "$W/admin.sock.lock"
check "ASan/UBSan reported nothing" bash -c "! grep -qE 'AddressSanitizer|runtime error' '$W/sy.log'"
checks_finish
