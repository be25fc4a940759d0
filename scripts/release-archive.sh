#!/usr/bin/env bash
# Makes the release archive the installer downloads, and its checksum:
#
#   scripts/release-archive.sh --cli target/release/aurora-cli \
#       --image-prefix REGISTRY/aurora-node --tag TAG [--arch amd64] [--out dist]
#
# dist/aurora-node-<version>-linux-<arch>.tar.gz holds one directory,
# aurora-node-<version>/, with what bootstrap.sh installs:
#   compose/       the stack (compose.yaml, node-init.sh, the configs)
#   bootstrap/     bootstrap.sh and uninstall.sh, for reruns and removal
#   bin/aurora-cli the operator's tool
#   images.env     AURORA_IMAGE_* naming the images of this release (the
#                  node's own images as the pipeline pushed them; the
#                  third-party ones keep compose.yaml's pinned defaults)
# and dist/aurora-node-<version>-linux-<arch>.tar.gz.sha256, which the
# installer checks before it unpacks anything. Only files git tracks go in
# (no build output, no local scratch files).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
die() { printf 'release-archive: %s\n' "$1" >&2; exit "${2:-1}"; }
usage_error() { die "$1 (see --help)" 2; }

cli="" prefix="" tag="" arch="" out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --cli) cli=${2:-}; shift 2 || usage_error "--cli needs a path" ;;
    --image-prefix) prefix=${2:-}; shift 2 || usage_error "--image-prefix needs a value" ;;
    --tag) tag=${2:-}; shift 2 || usage_error "--tag needs a value" ;;
    --arch) arch=${2:-}; shift 2 || usage_error "--arch needs a value" ;;
    --out) out=${2:-}; shift 2 || usage_error "--out needs a directory" ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
[ -n "$cli" ] || usage_error "--cli is required (the aurora-cli binary to ship)"
[ -x "$cli" ] || usage_error "--cli: $cli is not an executable file"
[ -n "$prefix" ] || usage_error "--image-prefix is required (where the pipeline pushed the node's images)"
[[ "$prefix" =~ ^[A-Za-z0-9._:/-]+$ ]] || usage_error "--image-prefix: '$prefix' is not an image repository prefix"
[ -n "$tag" ] || usage_error "--tag is required (the images' tag)"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || usage_error "--tag: '$tag' is not an image tag"
if [ -z "$arch" ]; then
  case "$(uname -m)" in x86_64|amd64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;;
    *) usage_error "--arch is required on $(uname -m)" ;; esac
fi
case "$arch" in amd64|arm64) ;; *) usage_error "--arch: '$arch' is not amd64 or arm64" ;; esac

# One version everywhere: the workspace's, which the installer names too.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
installer_version=$(sed -n 's/^  local version=\(.*\)$/\1/p' "$root/bootstrap/bootstrap.sh")
[ "$installer_version" = "$version" ] \
  || die "bootstrap.sh installs version '$installer_version' but the workspace is $version: bump both together"

name=aurora-node-$version-linux-$arch
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dir=$stage/aurora-node-$version
mkdir -p "$dir/bin"
git -C "$root" ls-files -z -- compose bootstrap/bootstrap.sh bootstrap/uninstall.sh \
  | (cd "$root" && tar --null -T - -cf -) | tar -x -C "$dir"
install -m 0755 "$cli" "$dir/bin/aurora-cli"
{
  echo "# The images of Aurora Node $version ($tag), read by bootstrap.sh."
  for image in wireguard postgres repl-manager asset-sync health-monitor dns-sync; do
    var=AURORA_IMAGE_$(printf '%s' "$image" | tr 'a-z-' 'A-Z_')
    grep -q "\${$var:-" "$dir/compose/compose.yaml" || die "compose.yaml does not read $var"
    echo "$var=$prefix/$image:$tag"
  done
} > "$dir/images.env"

mkdir -p "$out"
# Reproducible for the same inputs: fixed order, owner and times.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -cf - "aurora-node-$version" \
  | gzip -n > "$out/$name.tar.gz.tmp"
mv -f "$out/$name.tar.gz.tmp" "$out/$name.tar.gz"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
printf '%s\n' "$out/$name.tar.gz"
