#!/usr/bin/env bash
# The mmdebstrap hooks are single-quoted on purpose: mmdebstrap expands "$1".
# shellcheck disable=SC2016
# Builds the node stack's images without a container registry.
#
#   compose/images/build.sh --bin-dir target/debug [--tag TAG] [--print-env]
#
# 1. Bases: Debian root filesystems made with mmdebstrap from the apt sources
#    this machine is configured with, then `docker import`ed. Each is cached
#    under $AURORA_IMAGE_CACHE (default /var/cache/aurora-node/images, outside
#    any clone) and tagged by a key over its package list and this script, so
#    a rerun costs seconds and a changed list rebuilds only that base.
# 2. pgvector, built once from Debian's source package against PostgreSQL 15
#    (cached the same way).
# 3. The stack's images on top, from the Dockerfiles in this directory: the
#    sidecars copy host-built binaries (--bin-dir), so nothing is compiled
#    twice. Tagged aurora-local/<name>:<TAG>.
#
# --print-env prints the variables that point compose.yaml at these images
# (AURORA_IMAGE_*), one per line, for an env file or `export`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${AURORA_IMAGE_CACHE:-/var/cache/aurora-node/images}
suite=bookworm
bin_dir=""
tag="test"
print_env=0
only=()

log() { printf '==> images: %s\n' "$*" >&2; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --print-env) print_env=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) only+=("$1"); shift ;;
  esac
done

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer (is it running, and may this user use it?)"

# The Debian archive this machine's apt uses (deb822 .sources or a one-line
# sources.list entry), never a host written into the project.
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u != "" && $0 ~ /(bookworm|trixie)( |$)/ {print u; exit}' "$f")
    [ -n "$uri" ] && { printf '%s\n' "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    uri=$(awk '$1 == "deb" && $0 ~ / (bookworm|trixie) / {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")
    [ -n "$uri" ] && { printf '%s\n' "$uri"; return; }
  done
  die "no Debian archive found in this machine's apt sources"
}

ensure_mmdebstrap() {
  command -v mmdebstrap >/dev/null && return
  log "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null \
    || die "cannot install mmdebstrap (apt-get install mmdebstrap)"
}

# Bump when the way a base is made changes (hooks, options): the key is over
# this, the suite and the package list, not the whole script, so editing the
# rest of this file does not rebuild every base.
recipe=2
# The extract variant's hooks changed after the others'.
recipe_extract=3
key_of() { # list-file variant [recipe] -> 12 hex characters
  { printf 'recipe %s suite %s variant %s\n' "${3:-$recipe}" "$suite" "$2"; cat "$1"; } | sha256sum | cut -c1-12
}

packages_of() { grep -v '^#' "$1" | grep -v '^$' | paste -sd, -; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# build_base NAME VARIANT -> prints the image reference
build_base() {
  local name=$1 variant=$2 list="$here/bases/$1.list" key ref tar
  if [ "$variant" = extract ]; then
    key=$(key_of "$list" "$variant" "$recipe_extract")
  else
    key=$(key_of "$list" "$variant")
  fi
  ref="aurora-base/$name:$key"
  tar="$cache/base-$name-$key.tar"
  if have_image "$ref"; then printf '%s\n' "$ref"; return; fi
  if [ ! -s "$tar" ]; then
    ensure_mmdebstrap
    local mirror; mirror=$(debian_mirror)
    log "base $name: mmdebstrap $suite ($variant) — a few minutes, once"
    mkdir -p "$cache"
    # The extract variant runs no maintainer scripts and no customize
    # hooks: its hooks run right after extraction.
    local when=customize
    [ "$variant" = extract ] && when=extract
    local hooks=(
      "--$when-hook="'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
      "--$when-hook="'mkdir -p "$1"/tmp && chmod 1777 "$1"/tmp'
    )
    if [ "$variant" = extract ]; then
      # No maintainer scripts ran: make the CA bundle and a non-root user,
      # and drop what only a package manager or a shell would use.
      hooks+=(
        --extract-hook='mkdir -p "$1"/etc/ssl/certs && cat "$1"/usr/share/ca-certificates/mozilla/*.crt > "$1"/etc/ssl/certs/ca-certificates.crt'
        --extract-hook='test -s "$1"/etc/ssl/certs/ca-certificates.crt'
        --extract-hook='printf "root:x:0:0:root:/root:/sbin/nologin\naurora:x:10001:10001:aurora:/nonexistent:/sbin/nologin\n" > "$1"/etc/passwd'
        --extract-hook='printf "root:x:0:\naurora:x:10001:\n" > "$1"/etc/group'
        --extract-hook='rm -rf "$1"/usr/share/ca-certificates "$1"/usr/sbin "$1"/usr/bin/* "$1"/var/lib/dpkg "$1"/var/cache "$1"/var/log'
        # The sidecars link only libc, libm and libgcc_s (TLS is rustls):
        # OpenSSL (a dependency of ca-certificates) and iconv's modules go.
        --extract-hook='rm -rf "$1"/usr/lib/ssl "$1"/usr/lib/x86_64-linux-gnu/libssl* "$1"/usr/lib/x86_64-linux-gnu/libcrypto* "$1"/usr/lib/x86_64-linux-gnu/engines-3 "$1"/usr/lib/x86_64-linux-gnu/ossl-modules "$1"/usr/lib/x86_64-linux-gnu/gconv "$1"/usr/share/i18n "$1"/usr/share/zoneinfo'
      )
    fi
    mmdebstrap --quiet --format=tar --variant="$variant" --include="$(packages_of "$list")" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      "${hooks[@]}" "$suite" "$tar.tmp" "deb $mirror $suite main" \
      || die "mmdebstrap failed for base $name (see the output above)"
    mv "$tar.tmp" "$tar"
  fi
  log "base $name: docker import"
  docker import --message "aurora base $name ($suite, key $key)" "$tar" "$ref" >/dev/null \
    || die "docker import of $tar failed"
  # Superseded bases (another key) go: the cache holds one per name.
  local old
  for old in "$cache"/base-"$name"-*.tar; do
    [ "$old" = "$tar" ] || [ ! -e "$old" ] || rm -f "$old"
  done
  docker images --format '{{.Repository}}:{{.Tag}}' "aurora-base/$name" | grep -vx "$ref" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
  printf '%s\n' "$ref"
}

# pgvector for PostgreSQL 15, from Debian's source package (trixie's; bookworm
# has none), built in a throwaway root filesystem. Output: a tar of the
# installed files, cached by the recipe.
build_pgvector() {
  local key out
  key=$(key_of "$here/bases/pgbuild.list" pgvector-0.8-pg15 1)
  out="$cache/pgvector-pg15-$key.tar"
  if [ -s "$out" ]; then printf '%s\n' "$out"; return; fi
  ensure_mmdebstrap
  local mirror; mirror=$(debian_mirror)
  log "pgvector: building from Debian's source package against PostgreSQL 15 (about 4 minutes, once)"
  mkdir -p "$cache"
  # OPTFLAGS='' drops pgvector's default -march=native: the image must run on
  # any x86-64 host, not only on the one that built it.
  local root; root=$(mktemp -d "$cache/pgbuild.XXXXXX")
  chmod 755 "$root" # apt's sandbox user must reach it
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  # Keep the package lists: apt-get source runs after mmdebstrap is done.
  mmdebstrap --quiet --format=directory --variant=minbase --skip=cleanup/apt/lists \
    --include="$(packages_of "$here/bases/pgbuild.list")" \
    "$suite" "$root" "deb $mirror $suite main" "deb-src $mirror trixie main" \
    || die "mmdebstrap failed for the pgvector build root (see the output above)"
  chroot "$root" sh -ec '
    cd /tmp
    apt-get source -qq pgvector/trixie >/dev/null
    cd pgvector-*/
    make -s OPTFLAGS= PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
    make -s install OPTFLAGS= PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config DESTDIR=/out
    tar -C /out -cf /pgvector.tar .
  ' >&2 || die "building pgvector failed (see the output above)"
  mv "$root/pgvector.tar" "$cache/pgvector.tar"
  mv "$cache/pgvector.tar" "$out"
  printf '%s\n' "$out"
}

want() { # is image $1 asked for (all when none named)?
  [ ${#only[@]} -eq 0 ] && return 0
  local o; for o in "${only[@]}"; do [ "$o" = "$1" ] && return 0; done
  return 1
}

build_image() { # NAME DOCKERFILE CONTEXT build-args...
  local name=$1 file=$2 ctx=$3; shift 3
  local ref="aurora-local/$name:$tag"
  log "image $ref"
  DOCKER_BUILDKIT=1 docker build --quiet --file "$file" --target test --tag "$ref" "$@" "$ctx" >/dev/null \
    || die "docker build of $name failed (rerun without --quiet: docker build -f $file $ctx)"
}

main() {
  # One build at a time per cache (parallel test runs share it).
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  local sidecars=(asset-sync health-monitor dns-sync)
  local runtime postgres services pgv ctx
  if want postgres || want repl-manager || want asset-sync || want health-monitor || want dns-sync \
     || want garage || want redis || want prometheus || want alertmanager || want node-exporter || want wireguard \
     || want postgres-exporter || want redis-exporter; then
    :
  else
    die "unknown image name(s): ${only[*]}"
  fi
  ctx=$(mktemp -d)
  # shellcheck disable=SC2064 # expanded now: ctx is local to main
  trap "rm -rf '$ctx'" EXIT
  cp -r "$here/." "$ctx/"
  cp "$here/../../repl-manager/postgres-supervisor.sh" "$ctx/postgres-supervisor.sh"
  mkdir -p "$ctx/bin"
  # Mount points the sidecars (uid 10001) write to: the images carry them
  # with that owner, so a new named volume starts writable by them.
  mkdir -p "$ctx/dirs/assets" "$ctx/dirs/var/lib/aurora/wireguard" "$ctx/dirs/var/lib/aurora/prometheus-sd"

  if want postgres || want repl-manager; then
    postgres=$(build_base postgres minbase)
    pgv=$(build_pgvector)
    cp "$pgv" "$ctx/pgvector.tar"
    build_image postgres "$ctx/postgres.Dockerfile" "$ctx" --build-arg "BASE=$postgres"
  fi
  local needs_bins=0 s
  for s in repl-manager "${sidecars[@]}"; do want "$s" && needs_bins=1; done
  if [ "$needs_bins" -eq 1 ]; then
    [ -n "$bin_dir" ] || die "--bin-dir is required to build the sidecar images (e.g. target/debug)"
    for s in repl-manager "${sidecars[@]}"; do
      want "$s" || continue
      [ -x "$bin_dir/$s" ] || die "$bin_dir/$s is missing: build it first (cargo build --bins)"
      # The binary under its own name (docker exec … asset-sync once) and
      # `sidecar`, the entrypoint every sidecar image shares.
      mkdir -p "$ctx/bin/$s.d"
      # Debug info is most of a test build's size; images need none of it.
      strip --strip-debug -o "$ctx/bin/$s.d/$s" "$bin_dir/$s"
      ln -s "$s" "$ctx/bin/$s.d/sidecar"
    done
  fi
  if want repl-manager; then
    build_image repl-manager "$ctx/repl-manager.Dockerfile" "$ctx" --build-arg "POSTGRES_IMAGE=aurora-local/postgres:$tag"
  fi
  for s in "${sidecars[@]}"; do
    want "$s" || continue
    runtime=${runtime:-$(build_base runtime extract)}
    build_image "$s" "$ctx/sidecar.Dockerfile" "$ctx" --build-arg "BASE=$runtime" --build-arg "SIDECAR=$s"
  done
  if want garage; then
    runtime=${runtime:-$(build_base runtime extract)}
    local garage; garage=$(command -v garage || true)
    [ -n "$garage" ] || die "garage is not installed (scripts/lib/deps.sh installs it)"
    cp "$garage" "$ctx/bin/garage"
    build_image garage "$ctx/garage.Dockerfile" "$ctx" --build-arg "BASE=$runtime"
  fi
  for s in redis prometheus alertmanager node-exporter postgres-exporter redis-exporter wireguard; do
    want "$s" || continue
    services=${services:-$(build_base services minbase)}
    build_image "$s" "$ctx/$s.Dockerfile" "$ctx" --build-arg "BASE=$services"
  done

  if [ "$print_env" -eq 1 ]; then
    for s in postgres repl-manager asset-sync health-monitor dns-sync garage redis prometheus alertmanager node-exporter postgres-exporter redis-exporter wireguard; do
      want "$s" || continue
      printf 'AURORA_IMAGE_%s=aurora-local/%s:%s\n' "$(printf '%s' "$s" | tr 'a-z-' 'A-Z_')" "$s" "$tag"
    done
  fi
}

main
