# shellcheck shell=bash
# Shared shell functions for throwaway PostgreSQL servers, PgBouncer and process statistics.
# Sourced by tests/support/pg_cluster.sh, bench/bench.sh and scripts/demo.sh; not executable.
#
# PostgreSQL refuses to run as root: when the caller is root, data directories are owned by the
# `postgres` system user and the server tools run through `runuser -u postgres --`. Otherwise
# everything runs as the current user.
#
# Functions return non-zero on failure (they never exit), so callers decide what is fatal.

if [ -n "${_SY_PGLIB_LOADED:-}" ]; then
    return 0
fi
_SY_PGLIB_LOADED=1

: "${PG_BIN:=/usr/lib/postgresql/15/bin}"
PG_OS_USER=postgres # the system user servers run as when the caller is root

# ---- messages ----

# pglib_prog: the calling script's name, for messages.
pglib_prog() { basename -- "$0"; }

pglib_log() { printf '%s: %s\n' "$(pglib_prog)" "$*" >&2; }

pglib_die() {
    printf '%s: error: %s\n' "$(pglib_prog)" "$*" >&2
    exit 1
}

# pglib_tail FILE [LINES]: prints the end of a log file, indented, to stderr.
pglib_tail() {
    local file=$1 lines=${2:-30}
    if [ -s "$file" ]; then
        printf -- '--- last %s lines of %s ---\n' "$lines" "$file" >&2
        tail -n "$lines" -- "$file" | sed 's/^/    /' >&2
        printf -- '--- end of %s ---\n' "$file" >&2
    else
        printf -- '(%s is empty or missing)\n' "$file" >&2
    fi
}

# ---- running as the server owner ----

pglib_is_root() { [ "$(id -u)" -eq 0 ]; }

# pglib_as_owner CMD...: runs CMD as the PostgreSQL owner (postgres if we are root, else us).
# Runs from / so that the tools never trip over an unreadable current directory.
pglib_as_owner() {
    if pglib_is_root; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

# pglib_own PATH...: hands paths to the PostgreSQL owner (no-op unless root).
pglib_own() {
    if pglib_is_root; then
        chown "$PG_OS_USER:$PG_OS_USER" -- "$@"
    fi
}

# pglib_check_tools: the server binaries exist and, as root, the postgres user exists.
pglib_check_tools() {
    local t
    for t in initdb pg_ctl postgres; do
        if [ ! -x "$PG_BIN/$t" ]; then
            pglib_log "$PG_BIN/$t not found: install postgresql-15 (scripts/install-deps.sh) or set PG_BIN"
            return 1
        fi
    done
    if pglib_is_root && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        pglib_log "running as root but there is no '$PG_OS_USER' system user to run PostgreSQL as"
        return 1
    fi
}

# pglib_owner_can_use DIR: the PostgreSQL owner can enter and write DIR (parents need o+x).
pglib_owner_can_use() {
    local dir=$1 who
    if pglib_as_owner test -d "$dir" -a -w "$dir" -a -x "$dir"; then
        return 0
    fi
    who=$(id -un)
    if pglib_is_root; then
        who=$PG_OS_USER
    fi
    pglib_log "user '$who' cannot write $dir; its parent directories must be searchable (chmod o+x)"
    return 1
}

# ---- ports ----

_pglib_python() {
    if [ -x /usr/bin/python3 ]; then
        echo /usr/bin/python3
    else
        command -v python3 || true
    fi
}

# pglib_port_free PORT: 0 if nothing listens on 127.0.0.1:PORT and it can be bound.
pglib_port_free() {
    local port=$1 py
    py=$(_pglib_python)
    if [ -n "$py" ]; then
        "$py" - "$port" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
        return
    fi
    # No python: a port that accepts a connection is taken.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        return 1
    fi
    return 0
}

# pglib_free_port [EXCLUDED_PORT...]: prints a free TCP port on 127.0.0.1. Picks at random in
# 20000-31999 (below Linux's ephemeral range, so outgoing connections do not take it) so that
# concurrent runs rarely collide, skipping the excluded ports.
pglib_free_port() {
    local port try ex taken
    for ((try = 0; try < 200; try++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        taken=0
        for ex in "$@"; do
            if [ "$ex" = "$port" ]; then
                taken=1
            fi
        done
        if [ "$taken" -eq 0 ] && pglib_port_free "$port"; then
            echo "$port"
            return 0
        fi
    done
    pglib_log "could not find a free TCP port on 127.0.0.1"
    return 1
}

# pglib_wait_port HOST PORT TIMEOUT_S [PID]: waits until HOST:PORT accepts a connection. Gives
# up early if PID is given and that process has exited.
pglib_wait_port() {
    local host=$1 port=$2 timeout=$3 pid=${4:-} i
    for ((i = 0; i < timeout * 10; i++)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        if [ -n "$pid" ] && ! pglib_pid_alive "$pid"; then
            return 1
        fi
        sleep 0.1
    done
    return 1
}

# ---- socket directories ----

# pglib_socket_dir WANTED: prints WANTED if a socket path in it fits in sun_path (107 bytes, with
# room for "/.s.PGSQL.NNNNN.lock"); otherwise creates and prints a short /tmp directory owned
# by the server owner (the caller records it and removes it later).
pglib_socket_dir() {
    local wanted=$1 dir
    if [ "${#wanted}" -le 85 ]; then
        echo "$wanted"
        return 0
    fi
    dir=$(mktemp -d /tmp/sypg.XXXXXX) || return 1
    chmod 0755 "$dir"
    pglib_own "$dir"
    echo "$dir"
}

# ---- clusters ----

# pglib_initdb DATADIR: creates a cluster with superuser postgres and trust authentication.
# Output goes to DATADIR.initdb.log.
pglib_initdb() {
    local data=$1 out=$1.initdb.log
    if ! pglib_as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 \
        --locale=C --no-sync --no-instructions >"$out" 2>&1; then
        pglib_log "initdb failed for $data"
        pglib_tail "$out"
        return 1
    fi
}

# pglib_configure DATADIR PORT SOCKDIR [EXTRA_SETTING...]: appends the test settings to
# postgresql.conf. Extra settings ("max_connections = 600") come last and win.
pglib_configure() {
    local data=$1 port=$2 sockdir=$3 s
    shift 3
    {
        echo ""
        echo "# ---- added by switchyard tests/support/pglib.sh ----"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$sockdir'"
        echo "max_connections = 400"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "shared_buffers = 64MB"
        echo "wal_level = logical"
        echo "max_wal_senders = 10"
        echo "max_replication_slots = 10"
        echo "logging_collector = off"
        echo "log_min_messages = warning"
        for s in "$@"; do
            echo "$s"
        done
    } >>"$data/postgresql.conf"
}

# pglib_pg_install_cert DATADIR CERT KEY: copies a server certificate and its key into DATADIR
# as server.crt and server.key, owned by the server owner, the key mode 0600 (PostgreSQL refuses
# a key others can read). Pair it with pglib_configure's extra settings "ssl = on"
# "ssl_cert_file = 'server.crt'" "ssl_key_file = 'server.key'".
pglib_pg_install_cert() {
    local data=$1 cert=$2 key=$3
    if ! cp -- "$cert" "$data/server.crt" || ! cp -- "$key" "$data/server.key"; then
        pglib_log "cannot copy $cert and $key into $data"
        return 1
    fi
    chmod 0644 "$data/server.crt" && chmod 0600 "$data/server.key" &&
        pglib_own "$data/server.crt" "$data/server.key"
}

# pglib_pg_running DATADIR: 0 if a server is running on DATADIR.
pglib_pg_running() {
    local data=$1
    [ -f "$data/postmaster.pid" ] || return 1
    pglib_as_owner "$PG_BIN/pg_ctl" status -D "$data" >/dev/null 2>&1
}

# pglib_pg_port DATADIR: prints the port the cluster is configured with (last setting wins).
pglib_pg_port() {
    sed -n "s/^[[:space:]]*port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p" "$1/postgresql.conf" | tail -n 1
}

# pglib_pg_start DATADIR LOGFILE: starts the server and waits (60 s) until it accepts
# connections. If its port was taken meanwhile (another run won a race), moves to a free port
# and retries, up to three times. Prints the final port on stdout.
pglib_pg_start() {
    local data=$1 logfile=$2 attempt port out
    for ((attempt = 1; attempt <= 3; attempt++)); do
        if out=$(pglib_as_owner "$PG_BIN/pg_ctl" start -w -t 60 -D "$data" -l "$logfile" 2>&1); then
            pglib_pg_port "$data"
            return 0
        fi
        if [ "$attempt" -lt 3 ] && grep -qE 'could not bind|Address already in use|could not create any TCP/IP sockets' "$logfile" 2>/dev/null; then
            port=$(pglib_free_port "$(pglib_pg_port "$data")") || return 1
            pglib_log "port of $data was taken; retrying on port $port"
            echo "port = $port" >>"$data/postgresql.conf"
            continue
        fi
        break
    done
    pglib_log "PostgreSQL server in $data did not start: $(echo "$out" | tail -n 3)"
    pglib_tail "$logfile"
    return 1
}

# pglib_pg_stop DATADIR LOGFILE [MODE]: stops the server (default mode fast, 60 s), falling
# back to immediate. Succeeds if no server was running.
pglib_pg_stop() {
    local data=$1 logfile=$2 mode=${3:-fast}
    if ! pglib_pg_running "$data"; then
        return 0
    fi
    if pglib_as_owner "$PG_BIN/pg_ctl" stop -w -t 60 -m "$mode" -D "$data" >/dev/null 2>&1; then
        return 0
    fi
    pglib_log "PostgreSQL server in $data did not stop with -m $mode; trying -m immediate"
    pglib_tail "$logfile"
    if pglib_as_owner "$PG_BIN/pg_ctl" stop -w -t 30 -m immediate -D "$data" >/dev/null 2>&1; then
        return 0
    fi
    pglib_log "PostgreSQL server in $data could not be stopped"
    return 1
}

# pglib_psql PORT DB SQL: runs SQL as postgres over TCP, unaligned, tuples only.
pglib_psql() {
    local port=$1 db=$2 sql=$3
    PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" \
        -U postgres -d "$db" -c "$sql"
}

# pglib_createdb PORT NAME: creates a database.
pglib_createdb() {
    pglib_psql "$1" postgres "CREATE DATABASE \"$2\""
}

# ---- PgBouncer ----

# pglib_pgbouncer_start DIR LISTEN_PORT SERVER_PORT [EXTRA_SETTING...]: writes DIR/pgbouncer.ini
# (session mode, trust authentication, every database forwarded to 127.0.0.1:SERVER_PORT) and
# starts Debian's pgbouncer in the background, as postgres when root (it refuses to run as
# root). DIR must be usable by that user. Waits until it accepts; prints its PID.
pglib_pgbouncer_start() {
    local dir=$1 port=$2 server_port=$3 s pid i
    shift 3
    # trust still needs the user name listed in auth_file.
    printf '"postgres" ""\n' >"$dir/userlist.txt"
    {
        echo "[databases]"
        echo "* = host=127.0.0.1 port=$server_port"
        echo "[pgbouncer]"
        echo "listen_addr = 127.0.0.1"
        echo "listen_port = $port"
        echo "unix_socket_dir ="
        echo "auth_type = trust"
        echo "auth_file = $dir/userlist.txt"
        echo "admin_users = postgres"
        echo "pool_mode = session"
        echo "max_client_conn = 1000"
        echo "default_pool_size = 600"
        echo "logfile = $dir/pgbouncer.log"
        echo "pidfile = $dir/pgbouncer.pid"
        echo "log_connections = 0"
        echo "log_disconnections = 0"
        echo "ignore_startup_parameters = extra_float_digits"
        for s in "$@"; do
            echo "$s"
        done
    } >"$dir/pgbouncer.ini"
    pglib_own "$dir" "$dir/pgbouncer.ini" "$dir/userlist.txt"
    rm -f "$dir/pgbouncer.pid"
    # -d: daemonize, so the PID in the pidfile is pgbouncer's own (runuser would sit between).
    if ! pglib_as_owner pgbouncer -d -q "$dir/pgbouncer.ini" >"$dir/pgbouncer.out" 2>&1; then
        pglib_log "pgbouncer did not start"
        pglib_tail "$dir/pgbouncer.out"
        pglib_tail "$dir/pgbouncer.log"
        return 1
    fi
    for ((i = 0; i < 100; i++)); do
        if [ -s "$dir/pgbouncer.pid" ]; then
            break
        fi
        sleep 0.1
    done
    pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)
    if [ -z "$pid" ] || ! pglib_wait_port 127.0.0.1 "$port" 10 "$pid"; then
        pglib_log "pgbouncer is not accepting connections on 127.0.0.1:$port"
        pglib_tail "$dir/pgbouncer.log"
        return 1
    fi
    echo "$pid"
}

# ---- processes ----

# pglib_pid_alive PID: 0 if the process exists and is not a zombie (an exited child of ours that
# has not been waited for).
pglib_pid_alive() {
    local stat
    [ -n "$1" ] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# pglib_stop_pid PID [SIGNAL] [TIMEOUT_S]: signals a process (default TERM), waits for it to
# exit, then kills it; reaps it if it is our child. Succeeds if it is already gone.
pglib_stop_pid() {
    local pid=$1 sig=${2:-TERM} timeout=${3:-10} i
    [ -n "$pid" ] || return 0
    if pglib_pid_alive "$pid"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < timeout * 10; i++)); do
            pglib_pid_alive "$pid" || break
            sleep 0.1
        done
        if pglib_pid_alive "$pid"; then
            pglib_log "process $pid did not exit within ${timeout} s of SIG$sig; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

# pglib_cpu_ticks PID: prints utime+stime of the process (all its threads), in clock ticks.
pglib_cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) } # the command name may hold spaces and parentheses
    # shellcheck disable=SC2086 # split the fields on purpose
    set -- $rest
    # after the name: state(3) ppid(4) ... utime(14) stime(15) -> positions 12 and 13 here
    echo $((${12} + ${13}))
}

# pglib_rss_kb PID: prints the resident set size (VmRSS) in kB.
pglib_rss_kb() {
    awk '/^VmRSS:/ { print $2; found = 1 } END { exit !found }' "/proc/$1/status" 2>/dev/null
}
