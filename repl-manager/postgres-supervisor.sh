#!/bin/sh
# The postgres container's side of repl-manager's hold-file handshake
# (supervision = "external"; see docs/repl-manager.md).
#
# PostgreSQL runs in its own container; repl-manager runs in another and
# shares the data volume. repl-manager never signals a process it does not
# own. Instead:
#   - while $AURORA_HOLD_FILE exists, PostgreSQL must be stopped and stay
#     stopped (repl-manager is cloning, rewinding or rewriting settings);
#     the file holds the shutdown mode: fast (default) or immediate;
#   - when the file is removed, PostgreSQL may start;
#   - nothing starts while the data directory holds no cluster yet.
#
# Usage (as the container's command, running as the postgres user):
#   PGDATA=/var/lib/postgresql/data/pgdata \
#   AURORA_HOLD_FILE=/var/lib/postgresql/data/aurora.hold \
#   postgres-supervisor.sh [extra postgres arguments]
set -u

: "${PGDATA:?set PGDATA to the data directory}"
HOLD="${AURORA_HOLD_FILE:-$(dirname "$PGDATA")/aurora.hold}"
POSTGRES="${POSTGRES_BIN:-postgres}"
POLL="${AURORA_HOLD_POLL_SECS:-0.2}"

pid=""
stopping=0
# The container is being stopped: a fast shutdown, then exit.
on_term() {
  stopping=1
  if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null; fi
}
trap on_term TERM INT

log() { echo "postgres-supervisor: $*" >&2; }

while [ "$stopping" -eq 0 ]; do
  # Wait for permission and for a cluster to run.
  while [ -e "$HOLD" ] || [ ! -s "$PGDATA/PG_VERSION" ]; do
    [ "$stopping" -eq 1 ] && exit 0
    sleep "$POLL"
  done
  log "starting PostgreSQL on $PGDATA"
  "$POSTGRES" -D "$PGDATA" "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ -e "$HOLD" ]; then
      mode=$(cat "$HOLD" 2>/dev/null)
      case "$mode" in
        immediate) sig=QUIT ;;
        *) sig=INT ;; # fast shutdown
      esac
      log "hold file present: stopping PostgreSQL ($mode)"
      kill -"$sig" "$pid" 2>/dev/null
      break
    fi
    sleep "$POLL"
  done
  wait "$pid" 2>/dev/null
  log "PostgreSQL exited (status $?)"
  pid=""
  # A crash without a hold file: start again after a pause, as a container
  # restart policy would.
  [ -e "$HOLD" ] || sleep 1
done
exit 0
