#!/usr/bin/env bash
# A rolling deploy of the sidecar images tagged TAG over SSH through the VPN,
# one node at a time: compute nodes first, then the backup, the lead last.
# On each node `aurora-cli update SERVICE --image REF` recreates one
# sidecar, waits for its health check and rolls it back on failure; the
# first node that fails stops the rollout (the nodes after it, the lead
# among them, keep the old release).
#
#   scripts/deploy-fleet.sh --nodes FILE --image-prefix PREFIX --tag TAG \
#     [--target NAME|all] [--role lead|backup|compute|all] [--ssh-user USER] [--dry-run]
#
# FILE lists the fleet, one node a line: `name role vpn_ip` (# comments).
# Used by .github/workflows/deploy-standard-node.yml.

deploy_fleet() {
  set -euo pipefail
  local nodes="" prefix="" tag="" target=all role=all user=root dry_run=""
  local sidecars=(repl-manager asset-sync health-monitor dns-sync)
  die() { printf 'deploy: %s\n' "$1" >&2; exit "${2:-1}"; }
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes=${2:?}; shift 2 ;;
      --image-prefix) prefix=${2:?}; shift 2 ;;
      --tag) tag=${2:?}; shift 2 ;;
      --target) target=${2:?}; shift 2 ;;
      --role) role=${2:?}; shift 2 ;;
      --ssh-user) user=${2:?}; shift 2 ;;
      --dry-run) dry_run=1; shift ;;
      -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; return 0 ;;
      *) die "unknown argument '$1' (see --help)" 2 ;;
    esac
  done
  [ -r "$nodes" ] || die "--nodes: cannot read '$nodes'" 2
  [[ "$prefix" =~ ^[A-Za-z0-9._:/-]+$ ]] || die "--image-prefix: '$prefix' is not an image name prefix" 2
  [[ "$tag" =~ ^[A-Za-z0-9._-]{1,128}$ ]] || die "--tag: '$tag' is not an image tag" 2
  case "$role" in all|lead|backup|compute) ;; *) die "--role: '$role' must be all, lead, backup or compute" 2 ;; esac
  [[ "$target" =~ ^[a-z0-9-]+$ ]] || die "--target: '$target' is not a node name or all" 2

  # The plan: matching nodes, compute, then backup, then lead.
  local plan=() r name nrole ip line n=0
  for r in compute backup lead; do
    [ "$role" = all ] || [ "$role" = "$r" ] || continue
    while IFS= read -r line || [ -n "$line" ]; do
      n=$((n + 1))
      line=${line%%#*}
      [ -n "${line// /}" ] || continue
      read -r name nrole ip _ <<<"$line"
      [[ "$name" =~ ^[a-z0-9-]+$ ]] && [[ "$ip" =~ ^[0-9.]+$ ]] \
        || die "$nodes line $n: '$line' is not 'name role vpn_ip'" 2
      case "$nrole" in lead|backup|compute) ;; *) die "$nodes line $n: role '$nrole' is not lead, backup or compute" 2 ;; esac
      [ "$nrole" = "$r" ] || continue
      [ "$target" = all ] || [ "$target" = "$name" ] || continue
      plan+=("$name $ip $nrole")
    done < "$nodes"
  done
  [ ${#plan[@]} -gt 0 ] || die "no node in $nodes matches --target $target --role $role"

  local entry s started=$SECONDS
  for entry in "${plan[@]}"; do
    read -r name ip nrole <<<"$entry"
    printf '==> %s (%s, %s)\n' "$name" "$nrole" "$ip" >&2
    local script="set -e"
    for s in "${sidecars[@]}"; do
      # dns-sync runs on the lead and the backup only.
      [ "$s" != dns-sync ] || [ "$nrole" != compute ] || continue
      script+="; aurora-cli update $s --image $prefix/$s:$tag"
    done
    script+="; aurora-cli status"
    if [ -n "$dry_run" ]; then
      printf '[dry-run] ssh %s@%s %q\n' "$user" "$ip" "$script"
      continue
    fi
    if ! ssh -o BatchMode=yes -o ConnectTimeout=15 "$user@$ip" "$script"; then
      die "$name failed: its last sidecar was rolled back by aurora-cli update; the nodes after it were not touched"
    fi
  done
  printf '==> deployed %s to %d node(s) in %d s\n' "$tag" "${#plan[@]}" "$((SECONDS - started))" >&2
}

deploy_fleet "$@"
