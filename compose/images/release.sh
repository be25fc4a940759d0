#!/usr/bin/env bash
# Builds one of the node's own images (a sidecar, or the postgres and
# wireguard images they run beside) from this checkout and pushes it:
#
#   compose/images/release.sh NAME REF      # e.g. asset-sync <registry>/aurora-node/asset-sync:<commit>
#
# The `production` stage of the Dockerfiles compiles from source in the Rust
# image (the context carries the workspace as `git archive` makes it: only
# committed files) and runs on the distroless base. The pipeline
# (.github/workflows/deploy-standard-node.yml) runs it after the tests;
# it needs a registry, so it does not run on a machine without one.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { printf 'release: %s\n' "$*" >&2; exit 2; }

[ $# -eq 2 ] || die "usage: release.sh NAME REF"
sidecar=$1 ref=$2
case "$sidecar" in repl-manager|asset-sync|health-monitor|dns-sync|postgres|wireguard) ;;
  *) die "unknown image '$sidecar' (repl-manager, asset-sync, health-monitor, dns-sync, postgres, wireguard)" ;; esac
[[ "$ref" =~ ^[A-Za-z0-9._:/-]+$ ]] || die "'$ref' is not an image reference"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/workspace" "$ctx/dirs/assets" "$ctx/dirs/var/lib/aurora/wireguard" "$ctx/dirs/var/lib/aurora/prometheus-sd"
git -C "$root" archive --format=tar HEAD | tar -x -C "$ctx/workspace"
cp "$here"/*.Dockerfile "$here/wireguard-entrypoint.sh" "$ctx/"
cp "$root/repl-manager/postgres-supervisor.sh" "$ctx/postgres-supervisor.sh"
if [ "$sidecar" = postgres ] || [ "$sidecar" = wireguard ]; then
  file=$ctx/$sidecar.Dockerfile
  args=()
elif [ "$sidecar" = repl-manager ]; then
  file=$ctx/repl-manager.Dockerfile
  # On the PostgreSQL image of the same release.
  args=(--build-arg "POSTGRES_IMAGE=${ref%/*}/postgres:${ref##*:}")
else
  file=$ctx/sidecar.Dockerfile
  args=(--build-arg "SIDECAR=$sidecar")
fi
DOCKER_BUILDKIT=1 docker build --file "$file" --target production --tag "$ref" "${args[@]+"${args[@]}"}" "$ctx"
docker push "$ref"
