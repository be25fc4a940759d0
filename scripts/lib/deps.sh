# What the test suite and the sandbox need, installed when missing
# (idempotent; a few seconds when everything is present). Sourced by
# scripts/test and scripts/sandbox.
# shellcheck shell=bash

GARAGE_VERSION=2.5.0
log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

# --- Debian packages -------------------------------------------------------
apt_missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_missing+=(postgresql)
command -v dig >/dev/null 2>&1 || apt_missing+=(dnsutils)
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
command -v ip >/dev/null 2>&1 || apt_missing+=(iproute2)
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi
# PostgreSQL refuses to run as root; the harness runs it as this user.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  log "creating the postgres OS user"
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# --- Redis on 127.0.0.1:6379 (the health-monitor tests use a real one) ------
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  log "starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/aurora-test-redis.log
fi

# --- Rust tools --------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v garage >/dev/null 2>&1 || ! garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
  log "installing Garage $GARAGE_VERSION (S3 server for the tests; ~10-20 min cold on 2 cores)"
  cargo install garage --version "$GARAGE_VERSION" --locked --quiet
fi
