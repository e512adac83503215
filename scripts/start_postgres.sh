#!/usr/bin/env bash
# Start the local PostgreSQL cluster the service tests (and a local production-like setup) use,
# and make sure the login role exists. Idempotent: safe to run when the cluster is already up
# and the role already exists. Needs root (it manages the cluster as the `postgres` user).
#
#   scripts/start_postgres.sh            # role mlops / password mlops, CREATEDB
#
# Environment overrides: MLOPS_PG_ROLE, MLOPS_PG_PASSWORD, MLOPS_PG_WAIT_SECONDS (default 30).
# On success it prints `ready: role <role> on 127.0.0.1:<port>` and exits 0; on failure it
# prints the reason (and the server log's tail) to stderr and exits 1.
set -euo pipefail

ROLE="${MLOPS_PG_ROLE:-mlops}"
PASSWORD="${MLOPS_PG_PASSWORD:-mlops}"
WAIT_SECONDS="${MLOPS_PG_WAIT_SECONDS:-30}"

fail() { echo "start_postgres: ERROR: $*" >&2; exit 1; }
say() { echo "start_postgres: $*"; }

[[ "$ROLE" =~ ^[a-z_][a-z0-9_]*$ ]] || fail "MLOPS_PG_ROLE '$ROLE' must be a plain lower-case identifier"
[ "$(id -u)" -eq 0 ] || fail "must run as root (it starts the cluster and runs psql as the postgres user); try: sudo $0"

as_postgres() {
  if command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

# 1. The server package. Installed only when the Debian cluster tools are missing altogether.
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "pg_ctlcluster not found and apt-get is unavailable: install PostgreSQL first"
  say "PostgreSQL is not installed; installing it with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || fail "apt-get update failed"
  apt-get install -y -q postgresql >/dev/null || fail "apt-get install postgresql failed"
fi

# 2. The cluster: the first one listed (normally `15 main`); create one if none exists.
cluster_line() { pg_lsclusters -h 2>/dev/null | head -n 1; }
if [ -z "$(cluster_line)" ]; then
  version="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$version" ] || fail "no PostgreSQL server binaries under /usr/lib/postgresql"
  say "no cluster found; creating $version/main"
  pg_createcluster "$version" main >/dev/null || fail "pg_createcluster $version main failed"
fi
read -r VERSION NAME PORT STATUS _rest <<<"$(cluster_line)"

if [ "$STATUS" != "online" ]; then
  say "starting cluster $VERSION/$NAME on port $PORT"
  if ! out="$(pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$NAME" start 2>&1)"; then
    # A concurrent start (another CI step) may have won the race: only fail if it is still down.
    read -r _v _n _p STATUS _r <<<"$(cluster_line)"
    if [ "$STATUS" != "online" ]; then
      log="/var/log/postgresql/postgresql-$VERSION-$NAME.log"
      echo "$out" >&2
      [ -r "$log" ] && { echo "--- last lines of $log ---" >&2; tail -n 20 "$log" >&2; }
      fail "could not start cluster $VERSION/$NAME"
    fi
  fi
else
  say "cluster $VERSION/$NAME already running on port $PORT"
fi

# 3. Wait (bounded) until it accepts connections on the socket and on TCP 127.0.0.1.
deadline=$(( $(date +%s) + WAIT_SECONDS ))
until pg_isready -q -h 127.0.0.1 -p "$PORT" && as_postgres psql -p "$PORT" -tAc "SELECT 1" >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "cluster $VERSION/$NAME did not accept connections on 127.0.0.1:$PORT within ${WAIT_SECONDS}s"
  sleep 0.5
done

# 4. The login role (password auth over TCP). Created if missing; its password and rights are
#    (re)asserted every time so a half-configured role from an earlier attempt is repaired.
exists="$(as_postgres psql -p "$PORT" -v ON_ERROR_STOP=1 -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" \
  || fail "could not query roles as the postgres user"
pw_sql="${PASSWORD//\'/\'\'}"
if [ "$exists" != "1" ]; then
  say "creating role $ROLE"
  as_postgres psql -p "$PORT" -v ON_ERROR_STOP=1 -qc "CREATE ROLE \"$ROLE\" LOGIN PASSWORD '$pw_sql' CREATEDB" >/dev/null \
    || as_postgres psql -p "$PORT" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'" | grep -q 1 \
    || fail "could not create role $ROLE"
fi
as_postgres psql -p "$PORT" -v ON_ERROR_STOP=1 -qc "ALTER ROLE \"$ROLE\" LOGIN CREATEDB PASSWORD '$pw_sql'" >/dev/null \
  || fail "could not configure role $ROLE"

# 5. Prove that a password login over TCP works, the way the tests and services connect.
PGPASSWORD="$PASSWORD" psql -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d postgres -tAc "SELECT 1" >/dev/null 2>&1 \
  || fail "role $ROLE cannot log in over TCP on 127.0.0.1:$PORT (check pg_hba.conf)"

say "ready: role $ROLE on 127.0.0.1:$PORT"
