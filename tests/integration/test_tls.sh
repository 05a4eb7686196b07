#!/usr/bin/env bash
# TLS on both legs of switchyard, end to end, with real clients: psql and pgbench (libpq),
# openssl s_client (PostgreSQL 17's direct TLS with ALPN, which libpq 15 cannot do), raw sockets
# (python3) for protocol abuse around SSLRequest, and fake servers (python3) that refuse TLS or
# show a certificate switchyard must reject.
#
# Runs under ctest (SY_TEST_ENV, SY_BIN_DIR); starts its own switchyards with temp configs and
# removes everything on exit. Prints one line per check and "N passed, M failed" at the end;
# exits non-zero when any check failed.
# shellcheck disable=SC2153 # BLUE_PORT and the rest come from $SY_TEST_ENV
set -uo pipefail
: "${SY_TEST_ENV:?run through ctest}" "${SY_BIN_DIR:?run through ctest}"
# shellcheck disable=SC1090
. "$SY_TEST_ENV"
: "${CERT_DIR:?the env file has no CERT_DIR; the fixture is too old}"

# The interpreter itself, resolved once: a version manager's shim can take a second per start.
PY=$(python3 -c 'import sys; print(sys.executable)') || {
    echo "python3 is needed"
    exit 1
}
dir=$(mktemp -d /tmp/sy-tls-XXXXXX)
PSQL="$PG_BIN/psql"
PGBENCH="$PG_BIN/pgbench"
BENCH_DB=sy_tls_bench
sy_pids=()
fake_pids=()
passed=0
failed=0

cleanup() {
    local p
    for p in "${fake_pids[@]}" "${sy_pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    "$PG_BIN/dropdb" -h "$BLUE_HOST" -p "$BLUE_PORT" -U postgres --if-exists "$BENCH_DB" \
        >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

ok() {
    echo "ok - $1"
    passed=$((passed + 1))
}

not_ok() {
    echo "not ok - $1"
    if [ -n "${2:-}" ]; then
        printf '%s\n' "$2" | sed 's/^/    /'
    fi
    failed=$((failed + 1))
}

# check NAME CONDITION-EXIT-CODE [DETAIL]: records a check from a command's status.
check() {
    local name=$1 status=$2 detail=${3:-}
    if [ "$status" -eq 0 ]; then ok "$name"; else not_ok "$name" "$detail"; fi
}

# wait_log FILE PATTERN: waits up to 3 s for a line matching PATTERN (grep -E) in FILE.
wait_log() {
    local _
    for _ in $(seq 60); do
        grep -Eq -- "$2" "$1" && return 0
        sleep 0.05
    done
    return 1
}

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_sy NAME BLUE_PORT SWITCHYARD_LINES BLUE_LINES: starts a switchyard in front of
# 127.0.0.1:BLUE_PORT and sets SY_PORT, SY_LOG, SY_SOCK and SY_PID for it.
start_sy() {
    local name=$1 blue_port=$2 sy_lines=$3 blue_lines=$4
    SY_PORT=$(free_port)
    SY_LOG=$dir/$name.log
    SY_SOCK=$dir/$name.sock
    cat >"$dir/$name.ini" <<INI
[switchyard]
protocol = postgres
listen = 127.0.0.1:$SY_PORT
admin_socket = $SY_SOCK
log_level = debug
$sy_lines
[blue]
host = 127.0.0.1
port = $blue_port
$blue_lines
[green]
host = $GREEN_HOST
port = $GREEN_PORT
INI
    "$SY_BIN_DIR/switchyard" -c "$dir/$name.ini" 2>"$SY_LOG" &
    SY_PID=$!
    sy_pids+=("$SY_PID")
    local _
    for _ in $(seq 200); do
        if [ -S "$SY_SOCK" ]; then
            return 0
        fi
        if ! kill -0 "$SY_PID" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    echo "switchyard $name did not start:"
    cat "$SY_LOG"
    exit 1
}

# stop_sy PID LOG NAME: SIGTERM, which must end the process with status 0.
stop_sy() {
    local pid=$1 log=$2 name=$3 status=0
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" || status=$?
    check "switchyard ($name) stops cleanly on SIGTERM" "$status" "exit status $status; log: $log"
}

# The client-side TLS every switchyard here offers.
CLIENT_TLS="client_tls = require
client_tls_cert = $CERT_DIR/server.crt
client_tls_key = $CERT_DIR/server.key
auth_type = trust"

# ---- the main switchyard: TLS required from clients, verify-full to blue ----
start_sy main "$BLUE_PORT" "$CLIENT_TLS
client_login_timeout = 2s" "server_tls = verify-full
server_tls_ca = $CERT_DIR/ca.crt"
MAIN_PORT=$SY_PORT MAIN_LOG=$SY_LOG MAIN_SOCK=$SY_SOCK MAIN_PID=$SY_PID
ci="host=127.0.0.1 port=$MAIN_PORT user=postgres dbname=app"

# 1. sslmode=require: TLS to switchyard, and switchyard's own connection to blue is TLS too.
out=$("$PSQL" "$ci sslmode=require" -Atc \
    "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()" 2>&1)
[[ "$out" == "t|TLSv1.3" ]]
check "psql sslmode=require through switchyard; the server leg is TLSv1.3" $? "$out"

# 2. verify-full against the test CA, by host name.
out=$("$PSQL" "host=localhost port=$MAIN_PORT user=postgres dbname=app sslmode=verify-full sslrootcert=$CERT_DIR/ca.crt" \
    -Atc "select 'verified'" 2>&1)
[[ "$out" == "verified" ]]
check "psql sslmode=verify-full host=localhost with the test CA" $? "$out"

# 3. The wrong CA: libpq refuses switchyard's certificate.
out=$("$PSQL" "host=localhost port=$MAIN_PORT user=postgres dbname=app sslmode=verify-full sslrootcert=$CERT_DIR/wrong-ca.crt" \
    -Atc "select 'should not connect'" 2>&1)
status=$?
[ "$status" -ne 0 ] && grep -q "certificate verify failed" <<<"$out" &&
    wait_log "$MAIN_LOG" "closing: TLS handshake with the client failed: .*unknown ca"
check "psql with sslrootcert=wrong-ca.crt fails with a certificate verify error; the log says unknown ca" \
    $? "status $status: $out
log: $(grep -i "handshake" "$MAIN_LOG" | tail -3)"

# 4. No TLS at all: refused, and the message says why.
out=$("$PSQL" "$ci sslmode=disable" -Atc "select 'should not connect'" 2>&1)
status=$?
[ "$status" -ne 0 ] && grep -q "client_tls" <<<"$out" && grep -q "TLS" <<<"$out"
check "psql sslmode=disable is refused with a message naming TLS and client_tls" $? "status $status: $out"

# 5. Direct TLS (PostgreSQL 17): a ClientHello first, ALPN "postgresql".
out=$(timeout 10 openssl s_client -connect "127.0.0.1:$MAIN_PORT" -alpn postgresql \
    -CAfile "$CERT_DIR/ca.crt" -verify_return_error </dev/null 2>&1)
grep -q "ALPN protocol: postgresql" <<<"$out" && grep -q "Verify return code: 0 (ok)" <<<"$out" &&
    grep -q "TLSv1.3" <<<"$out"
check "direct TLS with ALPN postgresql: handshake completes, ALPN postgresql agreed" $? "$out"

# 5b. ... and then a full login over it (python3's ssl module speaks ALPN too).
out=$(timeout 20 "$PY" - "$MAIN_PORT" "$CERT_DIR/ca.crt" <<'PY' 2>&1
import socket, ssl, struct, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["postgresql"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                    server_hostname="localhost")
print("alpn", s.selected_alpn_protocol(), s.version())
body = struct.pack("!I", 196608) + b"user\0postgres\0database\0app\0\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
q = b"select 'direct-tls-ok'\0"
buf = b""
def msgs():
    global buf
    while True:
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
            d = s.recv(65536)
            if not d:
                raise SystemExit("closed: " + repr(buf[:200]))
            buf += d
        n = 1 + struct.unpack("!I", buf[1:5])[0]
        m, buf = buf[:n], buf[n:]
        yield m
it = msgs()
for m in it:
    if m[:1] == b"E":
        raise SystemExit("error: " + repr(m))
    if m[:1] == b"Z":
        break
s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
for m in it:
    if m[:1] == b"D":
        print("row", m[11:].decode())
    if m[:1] == b"Z":
        break
PY
)
grep -q "alpn postgresql TLSv1.3" <<<"$out" && grep -q "row direct-tls-ok" <<<"$out"
check "direct TLS login and a query (python3 ssl with ALPN)" $? "$out"

# 6. Direct TLS without ALPN: the handshake may finish, but switchyard then closes, and says why.
# s_client prints "closed" only when the server closes; its stdin stays open for 1.5 s, less
# than client_login_timeout.
out=$( (sleep 1.5) | timeout 10 openssl s_client -connect "127.0.0.1:$MAIN_PORT" \
    -CAfile "$CERT_DIR/ca.crt" 2>&1)
status=$?
[ "$status" -ne 124 ] && grep -q "No ALPN negotiated" <<<"$out" && grep -qx "closed" <<<"$out" &&
    wait_log "$MAIN_LOG" 'closing: direct TLS without ALPN "postgresql"' 
check "direct TLS without ALPN: switchyard closes the connection and the log says ALPN" $? \
    "s_client status $status: $out
log: $(grep -i alpn "$MAIN_LOG")"

# 6b. Direct TLS offering only another protocol: refused in the handshake (no_application_protocol).
out=$(timeout 10 openssl s_client -connect "127.0.0.1:$MAIN_PORT" -alpn http/1.1 </dev/null 2>&1)
grep -qi "no application protocol" <<<"$out" &&
    wait_log "$MAIN_LOG" "closing: TLS handshake with the client failed: no application protocol"
check "direct TLS offering ALPN http/1.1 only: no_application_protocol alert, and the log says so" \
    $? "$out
log: $(grep -i "handshake" "$MAIN_LOG" | tail -3)"

# 7. Bytes after SSLRequest in the same packet (the CVE-2021-23214 class): as from PostgreSQL,
# the answer 'S', then no handshake for those bytes and no error; the server waits until
# authentication_timeout, Switchyard closes at once and logs why.
out=$(timeout 20 "$PY" - "$MAIN_PORT" <<'PY' 2>&1
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
body = struct.pack("!I", 196608) + b"user\0postgres\0database\0app\0\0"
s.sendall(struct.pack("!II", 8, 80877103) + struct.pack("!I", len(body) + 4) + body)
data = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    data += d
print("got", data, "closed True")
PY
)
grep -q "got b'S' closed True" <<<"$out" &&
    wait_log "$MAIN_LOG" "closing: received unencrypted data after SSL request"
check "SSLRequest with bytes after it in the same packet: 'S', then closed without an error" $? "$out"

# 8. After 'S' the next bytes must be TLS: a second, plaintext SSLRequest fails cleanly.
out=$(timeout 20 "$PY" - "$MAIN_PORT" <<'PY' 2>&1
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(struct.pack("!II", 8, 80877103))
print("answer", s.recv(1).decode())
s.sendall(struct.pack("!II", 8, 80877103))
data = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
except ConnectionResetError:
    pass
# A TLS alert record (type 21) or nothing at all; never a plaintext 'S' or 'N' again.
print("closed; got", len(data), "bytes; first", data[:1].hex())
PY
)
grep -q "^answer S" <<<"$out" && grep -Eq "closed; got [0-9]+ bytes; first (15)?$" <<<"$out" &&
    wait_log "$MAIN_LOG" "closing: TLS handshake with the client failed: wrong version number"
check "a plaintext SSLRequest where the ClientHello should be: TLS error, connection closed" $? \
    "$out
log: $(grep -i "handshake" "$MAIN_LOG" | tail -3)"

# 8b. A client that stops after 'S' (no ClientHello) is closed after client_login_timeout, and
# the log says that, not something about TLS.
out=$(timeout 20 "$PY" - "$MAIN_PORT" <<'PY' 2>&1
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(struct.pack("!II", 8, 80877103))
print("answer", s.recv(1).decode())
t = time.time()
data = s.recv(4096)
print("closed after %.0f s with %d bytes" % (time.time() - t, len(data)))
PY
)
grep -q "^answer S" <<<"$out" && grep -Eq "closed after [1-4] s with 0 bytes" <<<"$out" &&
    wait_log "$MAIN_LOG" "closing: client did not complete login in time \(client_login_timeout\)"
check "silent after 'S': closed after client_login_timeout, and the log says so" $? \
    "$out
log: $(tail -3 "$MAIN_LOG")"

# 9. The admin socket shows TLSv1.3 on both legs of a live psql session.
"$PSQL" "$ci sslmode=require application_name=tls_watch" -Atc "select pg_sleep(2)" >/dev/null 2>&1 &
bg=$!
json=""
for _ in $(seq 40); do
    sleep 0.1
    json=$("$SY_BIN_DIR/switchyardctl" -s "$MAIN_SOCK" --json clients 2>&1)
    grep -q '"state":"active"' <<<"$json" && break
done
wait "$bg"
"$PY" - "$json" <<'PY'
import json, sys
clients = json.loads(sys.argv[1])["clients"]
live = [c for c in clients if c["user"] == "postgres" and c["state"] != "login"]
assert live, clients
c = live[0]
assert c["client_tls"].startswith("TLSv1.3 "), c
assert c["server_tls"].startswith("TLSv1.3 "), c
PY
check "switchyardctl --json clients: client_tls and server_tls are TLSv1.3 for a live session" $? "$json"

# 10. TLS survives a reload: new sessions after SIGHUP still get TLS on both legs.
kill -HUP "$MAIN_PID"
sleep 0.3
out=$("$PSQL" "$ci sslmode=require" -Atc "select ssl from pg_stat_ssl where pid = pg_backend_pid()" 2>&1)
[[ "$out" == "t" ]] && ! grep -q "reload failed" "$MAIN_LOG"
check "after SIGHUP: still TLS on both legs" $? "$out"

# ---- the server leg refuses or fails ----

# 11. server_tls = verify-full with the wrong CA: blue's certificate is rejected, clearly.
start_sy badca "$BLUE_PORT" "$CLIENT_TLS" "server_tls = verify-full
server_tls_ca = $CERT_DIR/wrong-ca.crt"
out=$("$PSQL" "host=127.0.0.1 port=$SY_PORT user=postgres dbname=app sslmode=require" \
    -Atc "select 'should not connect'" 2>&1)
status=$?
[ "$status" -ne 0 ] && grep -q "certificate verify failed" <<<"$out" &&
    grep -q "TLS handshake with the server failed: certificate verify failed" "$SY_LOG"
check "server_tls = verify-full with wrong-ca.crt: the client hears, the log names the certificate problem" \
    $? "status $status: $out
log: $(grep -i "certificate\|TLS" "$SY_LOG" | tail -3)"
stop_sy "$SY_PID" "$SY_LOG" badca

# fake_server MODE CERT KEY: a python3 stand-in for PostgreSQL on a free port (FAKE_PORT).
# MODE n: answers every SSLRequest 'N' and holds the connection; MODE s: answers 'S' and does a
# TLS handshake with CERT/KEY. Health probes (connect, then close) are ignored.
fake_server() {
    local mode=$1 cert=${2:-} key=${3:-}
    FAKE_PORT=$(free_port)
    "$PY" - "$FAKE_PORT" "$mode" "$cert" "$key" >"$dir/fake-$FAKE_PORT.log" 2>&1 <<'PY' &
import socket, ssl, sys, threading
port, mode, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(16)
print("listening", flush=True)
def serve(c):
    try:
        c.settimeout(10)
        req = c.recv(8)
        if len(req) < 8:
            return
        if mode == "n":
            c.sendall(b"N")
            c.recv(4096)  # whatever comes next; the proxy should close instead
        else:
            c.sendall(b"S")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            t = ctx.wrap_socket(c, server_side=True)
            t.recv(4096)
    except Exception as e:
        print("conn:", e, flush=True)
    finally:
        c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
    fake_pids+=($!)
    local _
    for _ in $(seq 100); do
        grep -q listening "$dir/fake-$FAKE_PORT.log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "the fake server did not start:"
    cat "$dir/fake-$FAKE_PORT.log"
    exit 1
}

# 12. server_tls = require against a server that answers 'N'.
fake_server n
start_sy refuse "$FAKE_PORT" "$CLIENT_TLS
health_interval = 0" "server_tls = require"
out=$("$PSQL" "host=127.0.0.1 port=$SY_PORT user=postgres dbname=app sslmode=require" \
    -Atc "select 'should not connect'" 2>&1)
status=$?
[ "$status" -ne 0 ] && grep -q "refused TLS" <<<"$out" && grep -q "refused TLS" "$SY_LOG"
check "server_tls = require against a server answering 'N': a clear 'refused TLS' error" $? \
    "status $status: $out"
stop_sy "$SY_PID" "$SY_LOG" refuse

# 13. verify-full against a server showing an expired certificate from the right CA.
fake_server s "$CERT_DIR/expired.crt" "$CERT_DIR/expired.key"
start_sy expired "$FAKE_PORT" "$CLIENT_TLS
health_interval = 0" "server_tls = verify-full
server_tls_ca = $CERT_DIR/ca.crt"
out=$("$PSQL" "host=127.0.0.1 port=$SY_PORT user=postgres dbname=app sslmode=require" \
    -Atc "select 'should not connect'" 2>&1)
status=$?
[ "$status" -ne 0 ] && grep -q "certificate has expired" <<<"$out" &&
    grep -q "certificate has expired" "$SY_LOG"
check "server_tls = verify-full against an expired server certificate: 'certificate has expired'" \
    $? "status $status: $out"
stop_sy "$SY_PID" "$SY_LOG" expired

# 14. verify-full against a server whose certificate comes from another CA (wrong-server.crt).
fake_server s "$CERT_DIR/wrong-server.crt" "$CERT_DIR/wrong-server.key"
start_sy wrongsrv "$FAKE_PORT" "$CLIENT_TLS
health_interval = 0" "server_tls = verify-full
server_tls_ca = $CERT_DIR/ca.crt"
out=$("$PSQL" "host=127.0.0.1 port=$SY_PORT user=postgres dbname=app sslmode=require" \
    -Atc "select 'should not connect'" 2>&1)
status=$?
[ "$status" -ne 0 ] && grep -q "certificate verify failed" <<<"$out"
check "server_tls = verify-full against a certificate from another CA: refused" $? \
    "status $status: $out"
stop_sy "$SY_PID" "$SY_LOG" wrongsrv

# ---- load: pgbench -S with TLS on both legs ----

# 15. Its own database, so that other tests' pgbench tables are left alone.
"$PG_BIN/dropdb" -h "$BLUE_HOST" -p "$BLUE_PORT" -U postgres --if-exists "$BENCH_DB" >/dev/null 2>&1
"$PG_BIN/createdb" -h "$BLUE_HOST" -p "$BLUE_PORT" -U postgres "$BENCH_DB" &&
    "$PGBENCH" -h "$BLUE_HOST" -p "$BLUE_PORT" -U postgres -i -s 1 -q "$BENCH_DB" >/dev/null 2>&1
check "pgbench -i directly on blue" $?
PGSSLMODE=require "$PGBENCH" -h 127.0.0.1 -p "$MAIN_PORT" -U postgres -S -c 8 -j 2 -T 5 \
    "$BENCH_DB" >"$dir/pgbench.out" 2>&1 &
bench=$!
sleep 2
json=$("$SY_BIN_DIR/switchyardctl" -s "$MAIN_SOCK" --json clients 2>&1)
wait "$bench"
status=$?
out=$(cat "$dir/pgbench.out")
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
nfailed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
echo "# pgbench -S over TLS: processed=${processed:-?} failed=${nfailed:-?} tps=${tps:-?}"
[ "$status" -eq 0 ] && [ -n "$processed" ] && [ "$processed" -gt 0 ] && [ "${nfailed:-1}" = 0 ]
check "pgbench -S -c 8 -j 2 -T 5 with TLS on both legs: no failed transactions" $? "$out"
"$PY" - "$json" <<'PY'
import json, sys
clients = json.loads(sys.argv[1])["clients"]
both = [c for c in clients if c["client_tls"].startswith("TLSv1.3 ") and c["server_tls"].startswith("TLSv1.3 ")]
assert len(both) >= 8, clients
PY
check "during pgbench all 8 sessions are TLSv1.3 on both legs" $? "$json"

# ---- the end ----
stop_sy "$MAIN_PID" "$MAIN_LOG" main
reports=""
for log in "$dir"/*.log; do
    case "$log" in */fake-*) continue ;; esac
    if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$log"; then
        reports+="$(basename "$log"):
$(grep -A20 -E "AddressSanitizer|LeakSanitizer|runtime error" "$log" | head -40)
"
    fi
done
[ -z "$reports" ]
check "no sanitizer report in any switchyard log" $? "$reports"

echo "$passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    echo "--- main switchyard log (last 40 lines) ---"
    tail -n 40 "$MAIN_LOG"
    exit 1
fi
