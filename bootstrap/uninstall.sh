#!/usr/bin/env bash
# Removes what bootstrap.sh installed on this node.
#
#   bootstrap/uninstall.sh [--prefix /opt/aurora] [--purge] [--dry-run] [--yes]
#
# Stops and removes the node's containers and networks, aurora-cli's link
# and config, and the files under --prefix that the installer wrote. Keeps
# the data unless --purge: the database volume, the asset mirror and the
# secrets ($prefix/state), so a later bootstrap.sh with the same answers
# brings the node back as it was. --purge removes those too (asked for
# unless --yes).

aurora_uninstall() {
  set -euo pipefail
  local end_marker=--aurora-uninstall-end-of-script
  if [ $# -eq 0 ] || [ "${!#}" != "$end_marker" ]; then
    printf 'uninstall: this copy of the script is incomplete: nothing was done\n' >&2
    return 3
  fi
  set -- "${@:1:$(($# - 1))}"

  local prefix=${INSTALL_AURORA_PREFIX:-/opt/aurora} purge="" dry_run="" yes=""
  die() { printf 'uninstall: %s\n' "$1" >&2; exit "${2:-1}"; }
  act() {
    if [ -n "$dry_run" ]; then printf '[dry-run] %s\n' "$*"; return 0; fi
    printf '+ %s\n' "$*" >&2
    "$@"
  }
  while [ $# -gt 0 ]; do
    case "$1" in
      --prefix) [ -n "${2:-}" ] || die "--prefix needs a value" 2; prefix=$2; shift 2 ;;
      --purge) purge=1; shift ;;
      --dry-run) dry_run=1; shift ;;
      --yes|-y) yes=1; shift ;;
      -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; return 0 ;;
      *) die "unknown argument '$1' (see --help)" 2 ;;
    esac
  done
  case "$prefix" in /?*) ;; *) die "--prefix: '$prefix' must be an absolute path other than /" 2 ;; esac
  local state=$prefix/state
  [ -f "$prefix/.installed" ] || [ -d "$state" ] \
    || die "nothing installed under $prefix (no $prefix/.installed): pass the --prefix bootstrap.sh was given"

  if [ -n "$purge" ] && [ -z "$yes" ] && [ -z "$dry_run" ]; then
    local answer=""
    printf 'Remove the database, the asset mirror and the secrets of this node for good? [y/N] ' >&2
    read -r answer </dev/tty 2>/dev/null || true
    case "$answer" in y|Y|yes) ;; *) die "not purged: nothing was removed" ;; esac
  fi

  if [ -f "$state/node.env" ] && command -v docker >/dev/null 2>&1; then
    if [ -n "$purge" ]; then
      act docker compose --env-file "$state/node.env" down --remove-orphans --volumes
    else
      act docker compose --env-file "$state/node.env" down --remove-orphans
    fi
    # `down` leaves the containers of services outside the node's profiles
    # (one started by name, say) and their volumes: the project's label
    # finds them all.
    local project ids
    project=$(sed -n 's/^AURORA_PROJECT=//p' "$state/node.env" | tail -n 1)
    if [ -n "$project" ]; then
      ids=$(docker ps -aq --filter "label=com.docker.compose.project=$project" 2>/dev/null || true)
      # shellcheck disable=SC2086 # one id per word
      [ -z "$ids" ] || act docker rm -f $ids >/dev/null
      if [ -n "$purge" ]; then
        ids=$(docker volume ls -q --filter "label=com.docker.compose.project=$project" 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -z "$ids" ] || act docker volume rm $ids >/dev/null
      fi
    fi
  fi
  # Outside the prefix: only what the installer listed.
  if [ -f "$prefix/.installed" ]; then
    local path
    while IFS= read -r path; do
      [ -n "$path" ] || continue
      case "$path" in /*) ;; *) continue ;; esac
      if [ -L "$path" ] || [ -f "$path" ]; then act rm -f "$path"; fi
      # Only a directory of ours (/etc/aurora), never a system one such as
      # /usr/local/bin, even when it is left empty.
      case "$(dirname "$path")" in
        *aurora*) [ -n "$dry_run" ] || rmdir "$(dirname "$path")" 2>/dev/null || true ;;
      esac
    done < "$prefix/.installed"
  fi
  act rm -rf "$prefix/compose" "$prefix/bin" "$prefix/bootstrap" "$prefix/images.env" "$prefix/.installed"
  if [ -n "$purge" ]; then
    local assets
    assets=$(sed -n 's/^AURORA_ASSETS_DIR=//p' "$state/node.env" 2>/dev/null | tail -n 1)
    case "$assets" in "$state"/*|"") ;; /?*) act rm -rf "$assets" ;; esac
    act rm -rf "$state" "$prefix/.credentials"
    [ -n "$dry_run" ] || rmdir "$prefix" 2>/dev/null || true
    printf 'uninstall: removed everything, data and secrets included\n' >&2
  else
    printf 'uninstall: kept the data and secrets in %s and the database volume; --purge removes them\n' "$state" >&2
  fi
}

aurora_uninstall "$@" --aurora-uninstall-end-of-script
