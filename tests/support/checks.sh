# Shared by the shell integration tests (source it): a throwaway directory for the test's own
# servers and files, cleaned up on exit, and TAP-style checks.
#
#   . "$SY_SOURCE_DIR/tests/support/checks.sh"
#   checks_init NAME        T: a new temporary directory (servers go in $T/pg), W=$T/w for the
#                           test's files; on exit background jobs in bg_pids and $sy_pid are
#                           killed, the servers stopped and T removed; after a failure W is kept
#                           in /tmp/sy-NAME-last
#   check DESCRIPTION COMMAND...   runs COMMAND: "ok - ..." or "not ok - ..."
#   ok / not_ok DESCRIPTION
#   checks_finish           prints the counts (and the tail of $W/sy.log after a failure) and
#                           exits 1 when a check failed
sy_pid=
bg_pids=()
passed=0
failed=0

checks_cleanup() {
    exec 7>&- 8>&- 9>&- 2>/dev/null || true
    [ -n "$sy_pid" ] && kill "$sy_pid" 2>/dev/null
    for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${failed:-1}" -ne 0 ] && [ -d "$W" ]; then
        rm -rf "/tmp/sy-$CHECKS_NAME-last"
        cp -r "$W" "/tmp/sy-$CHECKS_NAME-last" 2>/dev/null &&
            echo "logs kept in /tmp/sy-$CHECKS_NAME-last"
    fi
    bash "$SY_SOURCE_DIR/tests/support/pg_cluster.sh" stop "$T/pg" >/dev/null 2>&1 || true
    rm -rf "$T"
}

checks_init() {
    CHECKS_NAME=$1
    T=$(mktemp -d "/tmp/sy-$1-XXXXXX")
    chmod 0755 "$T"
    W=$T/w
    mkdir -p "$W"
    trap checks_cleanup EXIT
    trap 'failed=1; exit 1' TERM INT
}

ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND...
    local d=$1
    shift
    if "$@"; then ok "$d"; else not_ok "$d"; fi
}

checks_finish() {
    echo "$passed passed, $failed failed"
    if [ "$failed" -ne 0 ]; then
        echo "---- switchyard log (tail) ----"
        tail -n 60 "$W/sy.log" 2>/dev/null
        exit 1
    fi
}

# ---- a switchyard of the test's own (config in $W/sy.ini, log in $W/sy.log) ----

# sy_prepare USER PASSWORD: the auth file $W/users.txt, and a free loopback port in $port.
sy_prepare() {
    local py=/usr/bin/python3
    [ -x "$py" ] || py=python3
    port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf '"%s" "%s"\n' "$1" "$2" >"$W/users.txt"
    chmod 600 "$W/users.txt"
}

# sy_sides BLUE_PORT GREEN_PORT DB: the [blue] and [green] sections for the test's own servers
# (loopback, no TLS, control connections as postgres to DB).
sy_sides() {
    local side p
    for side in blue green; do
        [ "$side" = blue ] && p=$1 || p=$2
        printf '[%s]\nhost = 127.0.0.1\nport = %s\nserver_tls = disable\ncontrol_user = postgres\ncontrol_database = %s\n' \
            "$side" "$p" "$3"
    done
}

# start_sy: starts switchyard (pid in sy_pid) and waits for its admin socket.
start_sy() {
    "$SY_BIN_DIR/switchyard" -c "$W/sy.ini" 2>>"$W/sy.log" &
    sy_pid=$!
    for _ in $(seq 100); do
        [ -S "$W/admin.sock" ] && break
        sleep 0.05
    done
}
ctl() { "$SY_BIN_DIR/switchyardctl" -s "$W/admin.sock" "$@"; }
# active: the side switchyard routes to now (blue or green), from status.
active() { ctl --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["active"])'; }
# jget FILE KEY: a key of the JSON object on the last line of FILE (a command's reply or report).
jget() { tail -n 1 "$1" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2',''))"; }
