#!/usr/bin/env bash
# Aurora Node installer: one node, from nothing to serving, in one command.
#
#   curl -sSL <install url> | sudo bash                        # asks three questions
#   curl -sSL <install url> | sudo bash -s -- --non-interactive --name aurora --role lead
#   bootstrap/bootstrap.sh --dry-run ...                        # prints what it would do
#
# Options (each also an environment variable, as in k3s's installer):
#   --name NAME            INSTALL_AURORA_NAME         node name, a DNS label [hostname]
#   --role ROLE            INSTALL_AURORA_ROLE         lead, backup or compute [compute]
#   --vpn-ip IP            INSTALL_AURORA_VPN_IP       address inside the VPN network
#                                                      [auto: lead .1, backup .2]
#   --vpn-network CIDR     INSTALL_AURORA_VPN_NETWORK  [10.0.0.0/24]
#   --zone ZONE            INSTALL_AURORA_ZONE         the cluster zone [aurora.internal]
#   --token TOKEN          INSTALL_AURORA_TOKEN        join the fleet with a token from
#                                                      `aurora-cli join-token create` on the
#                                                      lead: address, mesh, members and
#                                                      secrets come from the fleet
#   --join HOST:PORT       INSTALL_AURORA_JOIN         the join endpoint to call [the token's;
#                                                      the backup's when the lead is away]
#   --members LIST         INSTALL_AURORA_MEMBERS      "name role ip,..." the whole fleet
#   --fleet-env FILE       INSTALL_AURORA_FLEET_ENV    joining by hand: the lead's
#                                                      secrets/fleet.env, copied over ssh
#   --garage-peer N=ID@H:P INSTALL_AURORA_GARAGE_PEER  a backup: the lead's Garage, as the lead's
#                                                      install printed it; the asset origin is
#                                                      laid out across both [the lead's alone]
#   --wg-endpoint H:P      INSTALL_AURORA_WG_ENDPOINT  this node's public WireGuard endpoint
#   --wg-peers FILE        INSTALL_AURORA_WG_PEERS     static WireGuard peers (wg syntax)
#   --prefix DIR           INSTALL_AURORA_PREFIX       [/opt/aurora]
#   --etc-dir DIR          INSTALL_AURORA_ETC_DIR      where aurora-cli's node.toml goes [/etc/aurora]
#   --bin-dir DIR          INSTALL_AURORA_BIN_DIR      where aurora-cli is linked [/usr/local/bin]
#   --bundle DIR|FILE      INSTALL_AURORA_BUNDLE       the release: compose/ and bin/aurora-cli
#                                                      [this checkout, else the release URL]
#   --images FILE          INSTALL_AURORA_IMAGES       pre-staged images (`docker save` archive)
#   --image-env FILE       INSTALL_AURORA_IMAGE_ENV    AURORA_IMAGE_* lines naming local tags
#   --skip-install         INSTALL_AURORA_SKIP_INSTALL never install Docker (offline installs)
#   --rotate-credentials                               new per-node secrets (Redis, Grafana)
#   --non-interactive      INSTALL_AURORA_NON_INTERACTIVE  never ask; fail on anything missing
#   --dry-run              INSTALL_AURORA_DRY_RUN      print every action, change nothing
#   --no-start                                         write everything, start nothing
#   --services "A B"       INSTALL_AURORA_SERVICES     start only these services [all of the role's]
#   --set KEY=VALUE                                    a node.env setting (ports, images,
#                                                      AURORA_ASSETS_DIR; docs/compose.md), repeatable
#   -h, --help
#
# The whole script is one function called on its last line with an
# end-of-script marker: a truncated download defines nothing, or calls the
# function without the marker, and runs nothing.

aurora_bootstrap() {
  set -euo pipefail
  umask 022

  local end_marker=--aurora-bootstrap-end-of-script
  if [ $# -eq 0 ] || [ "${!#}" != "$end_marker" ]; then
    printf 'bootstrap: this copy of the installer is incomplete (a truncated download?): nothing was done; download it again\n' >&2
    return 3
  fi
  set -- "${@:1:$(($# - 1))}"

  local started=$SECONDS
  local name=${INSTALL_AURORA_NAME:-} role=${INSTALL_AURORA_ROLE:-} vpn_ip=${INSTALL_AURORA_VPN_IP:-}
  local vpn_network=${INSTALL_AURORA_VPN_NETWORK:-} zone=${INSTALL_AURORA_ZONE:-}
  local members=${INSTALL_AURORA_MEMBERS:-} fleet_env=${INSTALL_AURORA_FLEET_ENV:-}
  local wg_endpoint=${INSTALL_AURORA_WG_ENDPOINT:-} wg_peers=${INSTALL_AURORA_WG_PEERS:-}
  local garage_peer=${INSTALL_AURORA_GARAGE_PEER:-}
  local join_url=${INSTALL_AURORA_JOIN:-} join_token=${INSTALL_AURORA_TOKEN:-}
  local prefix=${INSTALL_AURORA_PREFIX:-/opt/aurora} etc_dir=${INSTALL_AURORA_ETC_DIR:-/etc/aurora}
  local bin_dir=${INSTALL_AURORA_BIN_DIR:-/usr/local/bin} bundle=${INSTALL_AURORA_BUNDLE:-}
  local images=${INSTALL_AURORA_IMAGES:-} image_env=${INSTALL_AURORA_IMAGE_ENV:-}
  local skip_install=${INSTALL_AURORA_SKIP_INSTALL:-} non_interactive=${INSTALL_AURORA_NON_INTERACTIVE:-}
  local dry_run=${INSTALL_AURORA_DRY_RUN:-} rotate="" no_start=""
  local sets=() services=${INSTALL_AURORA_SERVICES:-}
  local version=0.1.0
  local release_base=${INSTALL_AURORA_RELEASE_BASE:-https://github.com/aurora-node/aurora-node/releases/download}
  local docker_repo=${INSTALL_AURORA_DOCKER_REPO:-https://download.docker.com/linux}

  # --- output -----------------------------------------------------------------
  say() { printf '%s\n' "$*" >&2; }
  step() { printf '==> %s\n' "$*" >&2; }
  # A failure names what failed and how to fix it; exit 2 for bad input,
  # 1 for everything else.
  die() { printf 'bootstrap: %s\n' "$1" >&2; exit "${2:-1}"; }
  usage_error() { die "$1 (see --help)" 2; }
  # Every change to the machine goes through act: printed, and under
  # --dry-run only printed.
  act() {
    if [ -n "$dry_run" ]; then printf '[dry-run] %s\n' "$*"; return 0; fi
    printf '+ %s\n' "$*" >&2
    "$@"
  }
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

  # --- arguments ----------------------------------------------------------------
  need_value() { [ $# -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"; }
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) need_value "$@"; name=$2; shift 2 ;;
      --role) need_value "$@"; role=$2; shift 2 ;;
      --vpn-ip) need_value "$@"; vpn_ip=$2; shift 2 ;;
      --vpn-network) need_value "$@"; vpn_network=$2; shift 2 ;;
      --zone) need_value "$@"; zone=$2; shift 2 ;;
      --members) need_value "$@"; members=$2; shift 2 ;;
      --fleet-env) need_value "$@"; fleet_env=$2; shift 2 ;;
      --wg-endpoint) need_value "$@"; wg_endpoint=$2; shift 2 ;;
      --garage-peer) need_value "$@"; garage_peer=$2; shift 2 ;;
      --wg-peers) need_value "$@"; wg_peers=$2; shift 2 ;;
      --prefix) need_value "$@"; prefix=$2; shift 2 ;;
      --etc-dir) need_value "$@"; etc_dir=$2; shift 2 ;;
      --bin-dir) need_value "$@"; bin_dir=$2; shift 2 ;;
      --bundle) need_value "$@"; bundle=$2; shift 2 ;;
      --images) need_value "$@"; images=$2; shift 2 ;;
      --image-env) need_value "$@"; image_env=$2; shift 2 ;;
      --skip-install) skip_install=1; shift ;;
      --rotate-credentials) rotate=1; shift ;;
      --non-interactive) non_interactive=1; shift ;;
      --dry-run) dry_run=1; shift ;;
      --no-start) no_start=1; shift ;;
      --set) need_value "$@"; sets+=("$2"); shift 2 ;;
      --services) need_value "$@"; services=$2; shift 2 ;;
      --join) need_value "$@"; join_url=$2; shift 2 ;;
      --token) need_value "$@"; join_token=$2; shift 2 ;;
      -h|--help)
        if [ -r "${BASH_SOURCE[0]:-}" ]; then sed -n '2,40p' "${BASH_SOURCE[0]}"; else say "see the install documentation: --help needs a saved copy of the script"; fi
        return 0 ;;
      *) usage_error "unknown argument '$1'" ;;
    esac
  done
  case "$non_interactive" in ""|0|false|no) non_interactive="" ;; *) non_interactive=1 ;; esac
  case "$prefix" in /*) ;; *) usage_error "--prefix: '$prefix' must be an absolute path" ;; esac

  # A rerun starts from the answers of the install before it (what was
  # not given again is kept: the members, the ports, the images), so
  # `bootstrap.sh --rotate-credentials` alone is safe. Read as data, never
  # sourced.
  local answers=$prefix/state/install.env
  local previous_sets=()
  if [ -r "$answers" ]; then
    earlier() { sed -n "s/^$1=//p" "$answers" | tail -n 1; }
    [ -n "$name" ] || name=$(earlier NAME)
    [ -n "$role" ] || role=$(earlier ROLE)
    [ -n "$vpn_ip" ] || vpn_ip=$(earlier VPN_IP)
    [ -n "$vpn_network" ] || vpn_network=$(earlier VPN_NETWORK)
    [ -n "$zone" ] || zone=$(earlier ZONE)
    [ -n "$members" ] || members=$(earlier MEMBERS)
    [ -n "$wg_endpoint" ] || wg_endpoint=$(earlier WG_ENDPOINT)
    [ -n "$services" ] || services=$(earlier SERVICES)
    while IFS= read -r line; do previous_sets+=("$line"); done < <(sed -n 's/^SET=//p' "$answers")
  fi
  vpn_network=${vpn_network:-10.0.0.0/24}
  zone=${zone:-aurora.internal}
  case "$dry_run" in ""|0|false|no) dry_run="" ;; *) dry_run=1 ;; esac
  case "$skip_install" in ""|0|false|no) skip_install="" ;; *) skip_install=1 ;; esac

  # --- validation (pure: prints the reason, returns 1) ---------------------------
  ip_to_int() { # a.b.c.d -> integer, or return 1
    local ip=$1 a b c d
    [[ "$ip" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
    a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]} c=${BASH_REMATCH[3]} d=${BASH_REMATCH[4]}
    local x
    for x in "$a" "$b" "$c" "$d"; do [ $((10#$x)) -le 255 ] || return 1; done
    echo $(( (10#$a << 24) | (10#$b << 16) | (10#$c << 8) | 10#$d ))
  }
  int_to_ip() { echo "$(( ($1 >> 24) & 255 )).$(( ($1 >> 16) & 255 )).$(( ($1 >> 8) & 255 )).$(( $1 & 255 ))"; }
  net_base=0 net_bits=0
  check_network() {
    local addr=${1%/*} bits=${1#*/} n
    [ "$addr" != "$1" ] && [[ "$bits" =~ ^[0-9]{1,2}$ ]] && [ "$bits" -ge 8 ] && [ "$bits" -le 30 ] \
      || { echo "'$1' is not an IPv4 network with a prefix length from 8 to 30, like 10.0.0.0/24"; return 1; }
    n=$(ip_to_int "$addr") || { echo "'$addr' is not an IPv4 address"; return 1; }
    net_bits=$bits
    net_base=$(( n & ~((1 << (32 - bits)) - 1) & 0xFFFFFFFF ))
  }
  check_name() {
    [[ "$1" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
      || { echo "'$1' is not a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"; return 1; }
  }
  check_role() {
    case "$1" in lead|backup|compute) ;; *) echo "'$1' is not a role: lead, backup or compute"; return 1 ;; esac
  }
  check_vpn_ip() {
    local n size
    n=$(ip_to_int "$1") || { echo "'$1' is not an IPv4 address"; return 1; }
    size=$(( 1 << (32 - net_bits) ))
    if [ $(( n & ~(size - 1) & 0xFFFFFFFF )) -ne "$net_base" ]; then
      echo "$1 is outside the VPN network $vpn_network"; return 1
    fi
    if [ "$n" -eq "$net_base" ] || [ "$n" -eq $(( net_base + size - 1 )) ]; then
      echo "$1 is the network's own or broadcast address, not a host of $vpn_network"; return 1
    fi
  }
  check_zone() {
    [[ "$1" =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
      || { echo "'$1' is not a DNS name like aurora.internal"; return 1; }
  }

  # --- questions ------------------------------------------------------------------
  # Asked on the terminal even under `curl | bash` (stdin is the script
  # then). INSTALL_AURORA_TTY names another source of answers (the tests).
  local tty_src=${INSTALL_AURORA_TTY:-/dev/tty} tty_open=""
  open_tty() {
    [ -n "$tty_open" ] && return 0
    if [ -z "$non_interactive" ] && { exec 3<"$tty_src"; } 2>/dev/null; then tty_open=1; return 0; fi
    return 1
  }
  # ask VAR QUESTION DEFAULT CHECK: keeps a given value when it passes CHECK
  # (else exits 2 naming it), asks otherwise; a wrong answer is asked again.
  ask() {
    local var=$1 question=$2 default=$3 check=$4 flag=$5 value answer why tries=0
    value=${!var}
    if [ -n "$value" ]; then
      why=$($check "$value") || usage_error "$flag: $why"
      return 0
    fi
    if ! open_tty; then
      [ -n "$default" ] || usage_error "$flag is required (no terminal to ask on${non_interactive:+, and --non-interactive})"
      why=$($check "$default") || usage_error "$flag: the default $why"
      printf -v "$var" '%s' "$default"
      return 0
    fi
    while :; do
      tries=$((tries + 1))
      [ "$tries" -le 5 ] || usage_error "$flag: no valid answer after 5 tries"
      printf '%s [%s] ' "$question" "${default:-required}" >&2
      IFS= read -r answer <&3 || usage_error "$flag: no answer (end of input)"
      answer=${answer:-$default}
      if [ -z "$answer" ]; then say "  an answer is required"; continue; fi
      if why=$($check "$answer"); then printf -v "$var" '%s' "$answer"; return 0; fi
      say "  $why"
    done
  }

  why=$(check_network "$vpn_network") || usage_error "--vpn-network: $why"
  check_network "$vpn_network" >/dev/null
  why=$(check_zone "$zone") || usage_error "--zone: $why"
  local host_default
  host_default=$(hostname -s 2>/dev/null | tr 'A-Z_' 'a-z-' || true)
  check_name "$host_default" >/dev/null 2>&1 || host_default=""
  # --non-interactive takes no default for who the node is: both must be given.
  local role_default=compute
  if [ -n "$non_interactive" ]; then host_default=""; role_default=""; fi
  ask name "Node name?" "$host_default" check_name --name
  ask role "Role? (lead, backup, compute)" "$role_default" check_role --role
  # Joining with a token: the fleet answers the rest (address, members,
  # secrets, peers). Checked before anything is written.
  local joining=""
  if [ -n "$join_token" ] || [ -n "$join_url" ]; then
    [ -n "$join_token" ] || usage_error "--join needs --token: run \`aurora-cli join-token create\` on the lead"
    [[ "$join_token" =~ ^AJ1\.[0-9a-f]{64}\.[0-9a-f]{16}\.[0-9a-f]{64}\.[^[:space:]]+:[0-9]+$ ]] \
      || usage_error "--token: not a whole Aurora join token (AJ1.<fingerprint>.<id>.<secret>.<host:port>): copy the whole line the lead printed"
    [ "$role" != lead ] || usage_error "--token: a lead creates its fleet; join as backup or compute"
    [ -z "$fleet_env" ] || usage_error "--token and --fleet-env: a node joining with a token gets the fleet's secrets from the fleet; give one of them"
    [ -z "$members" ] || usage_error "--token and --members: the fleet tells a joining node its members; drop --members"
    if [ -s "$prefix/state/secrets/fleet.env" ]; then
      say "this node joined already ($prefix/state/secrets/fleet.env exists): --token is not used"
    else
      joining=1
    fi
  fi
  local auto_ip=""
  case "$role" in
    lead) auto_ip=$(int_to_ip $(( net_base + 1 ))) ;;
    backup) auto_ip=$(int_to_ip $(( net_base + 2 ))) ;;
  esac
  if [ -n "$joining" ]; then
    # Asked for only when given: else the fleet picks the next free one.
    if [ -n "$vpn_ip" ]; then why=$(check_vpn_ip "$vpn_ip") || usage_error "--vpn-ip: $why"; fi
  else
    ask vpn_ip "VPN IP?" "$auto_ip" check_vpn_ip --vpn-ip
  fi

  if [ "$role" != lead ] && [ -z "$joining" ]; then
    if [ -z "$fleet_env" ] && [ ! -s "$prefix/state/secrets/fleet.env" ]; then
      usage_error "a $role node joins an existing fleet: --token TOKEN (aurora-cli join-token create on the lead), or --fleet-env FILE (the lead's $prefix/state/secrets/fleet.env, copied over a safe channel)"
    fi
  fi
  [ -z "$fleet_env" ] || [ -r "$fleet_env" ] || usage_error "--fleet-env: cannot read $fleet_env"
  [ -z "$wg_peers" ] || [ -r "$wg_peers" ] || usage_error "--wg-peers: cannot read $wg_peers"
  [ -z "$images" ] || [ -r "$images" ] || usage_error "--images: cannot read $images"
  [ -z "$image_env" ] || [ -r "$image_env" ] || usage_error "--image-env: cannot read $image_env"
  if [ -n "$image_env" ] && grep -qvE '^(#.*|AURORA_IMAGE_[A-Z0-9_]+=[^[:space:]]+|)$' "$image_env"; then
    usage_error "--image-env: $image_env holds lines that are not AURORA_IMAGE_NAME=image:tag"
  fi
  case "$etc_dir" in /*) ;; *) usage_error "--etc-dir: '$etc_dir' must be an absolute path" ;; esac
  case "$bin_dir" in /*) ;; *) usage_error "--bin-dir: '$bin_dir' must be an absolute path" ;; esac
  [ -n "$members" ] || [ -n "$joining" ] || members="$name $role $vpn_ip"
  if [ -n "$garage_peer" ]; then
    [[ "$garage_peer" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?=[0-9a-f]{64}@[^[:space:]@]+:[0-9]{1,5}$ ]] \
      || usage_error "--garage-peer: '$garage_peer' is not NAME=ID@HOST:PORT (the line \"this node's Garage: ...\" the lead's install printed)"
    [ "$role" != compute ] || usage_error "--garage-peer: a compute node runs no Garage"
    [ "${garage_peer%%=*}" != "$name" ] || usage_error "--garage-peer: that is this node ($name); give the lead's Garage"
  fi
  local svc_list=()
  services=${services//,/ }
  for kv in $services; do
    [[ "$kv" =~ ^[a-z0-9][a-z0-9-]*$ ]] || usage_error "--services: '$kv' is not a service name"
    svc_list+=("$kv")
  done
  local kv compose_file_set=""
  for kv in "${sets[@]+"${sets[@]}"}"; do
    [[ "$kv" =~ ^[A-Z][A-Z0-9_]*=[^[:space:]]*$ ]] || usage_error "--set: '$kv' is not KEY=VALUE (no spaces)"
    [ "${kv%%=*}" != COMPOSE_FILE ] || compose_file_set=1
  done

  # --- the system -----------------------------------------------------------------
  local os arch
  os=$(uname -s)
  arch=$(uname -m)
  case "$arch" in x86_64|amd64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;;
    *) die "unsupported architecture $arch: Aurora Node runs on x86_64 and arm64" ;; esac
  case "$os" in
    Linux)
      local distro="" like="" codename=""
      if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        distro=$(. /etc/os-release && echo "${ID:-}"); like=$(. /etc/os-release && echo "${ID_LIKE:-}")
        # shellcheck disable=SC1091
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
      fi
      case "$distro $like" in
        *debian*|*ubuntu*) ;;
        *) die "unsupported Linux distribution '${distro:-unknown}': Aurora Node installs on Debian and Ubuntu" ;;
      esac
      ;;
    Darwin) die "macOS is not supported by this release of the installer: run a Debian or Ubuntu node (a VM works)" ;;
    *) die "unsupported system $os: Aurora Node installs on Debian and Ubuntu" ;;
  esac
  if [ -z "$dry_run" ] && [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    die "run as root (or install sudo): the installer writes $prefix and starts containers"
  fi

  step "Aurora Node $version: $name ($role, ${vpn_ip:-the address the fleet picks} in $vpn_network) into $prefix"

  # --- Docker and Compose -----------------------------------------------------------
  have_compose() { docker compose version 2>/dev/null | grep -Eq 'version v?2\.'; }
  if command -v docker >/dev/null 2>&1 && have_compose; then
    :
  elif [ -n "$skip_install" ]; then
    die "Docker with Compose v2 is missing and --skip-install forbids installing it: install docker-ce and docker-compose-plugin, then run again"
  else
    step "installing Docker Engine and Compose from Docker's apt repository"
    local apt_id=$distro
    case "$distro" in debian|ubuntu) ;; *) case "$like" in *ubuntu*) apt_id=ubuntu ;; *) apt_id=debian ;; esac ;; esac
    [ -n "$codename" ] || die "cannot tell this system's release codename (VERSION_CODENAME in /etc/os-release) for Docker's apt repository"
    act as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    act as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates curl
    act as_root install -m 0755 -d /etc/apt/keyrings
    act as_root curl -fsSL "$docker_repo/$apt_id/gpg" -o /etc/apt/keyrings/docker.asc
    act as_root sh -c "echo 'deb [arch=$(dpkg --print-architecture 2>/dev/null || echo "$arch") signed-by=/etc/apt/keyrings/docker.asc] $docker_repo/$apt_id $codename stable' > /etc/apt/sources.list.d/docker.list"
    act as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    act as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-ce docker-ce-cli containerd.io docker-compose-plugin
    act as_root systemctl enable --now docker
  fi
  if [ -z "$dry_run" ] && ! docker info >/dev/null 2>&1; then
    die "the Docker daemon does not answer: start it (systemctl start docker) and run again"
  fi

  # --- the release: compose files and aurora-cli --------------------------------------
  local src="" tmp=""
  if [ -z "$bundle" ]; then
    local self=${BASH_SOURCE[0]:-}
    if [ -n "$self" ] && [ -f "$self" ] && [ -f "$(dirname "$self")/../compose/compose.yaml" ]; then
      bundle=$(cd "$(dirname "$self")/.." && pwd)
    else
      bundle="$release_base/v$version/aurora-node-$version-linux-$arch.tar.gz"
    fi
  fi
  case "$bundle" in
    http://*|https://*)
      if [ -n "$dry_run" ]; then
        printf '[dry-run] download %s\n' "$bundle"; src=""
      else
        tmp=$(mktemp -d)
        # Expanded now: the function's locals are gone when EXIT runs.
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" EXIT
        step "downloading $bundle"
        curl -fsSL "$bundle" -o "$tmp/bundle.tar.gz" \
          || die "cannot download the release $bundle: check the network, or pass --bundle with a downloaded copy"
        # Checked before anything in it runs: a truncated or altered
        # download is refused (as k3s checks its binary's sha256).
        curl -fsSL "$bundle.sha256" -o "$tmp/bundle.sha256" \
          || die "cannot download the release's checksum $bundle.sha256: nothing was installed; check the network, or pass --bundle with a copy you verified"
        local want got
        want=$(awk 'NR == 1 {print $1}' "$tmp/bundle.sha256")
        [[ "$want" =~ ^[0-9a-f]{64}$ ]] || die "the release's checksum file $bundle.sha256 holds no sha256: nothing was installed"
        got=$(sha256sum "$tmp/bundle.tar.gz" | cut -d' ' -f1)
        [ "$got" = "$want" ] \
          || die "the release $bundle does not match its checksum (sha256 $got, expected $want): nothing was installed; download it again"
        tar -xzf "$tmp/bundle.tar.gz" -C "$tmp" || die "the release archive $bundle is damaged: download it again"
        src=$tmp/aurora-node-$version
      fi ;;
    *.tar.gz|*.tgz)
      [ -r "$bundle" ] || usage_error "--bundle: cannot read $bundle"
      tmp=$(mktemp -d)
      # shellcheck disable=SC2064 # expanded now, as above
      trap "rm -rf '$tmp'" EXIT
      tar -xzf "$bundle" -C "$tmp" || die "the release archive $bundle is damaged: download it again"
      src=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1) ;;
    *) src=$bundle ;;
  esac
  if [ -n "$src" ]; then
    [ -f "$src/compose/compose.yaml" ] || die "the release at $bundle has no compose/compose.yaml"
    [ -x "$src/compose/node-init.sh" ] || die "the release at $bundle has no compose/node-init.sh"
  fi
  # A release names its own images (images.env); --image-env overrides it.
  local bundle_images=""
  if [ -z "$image_env" ] && [ -n "$src" ] && [ -f "$src/images.env" ]; then
    image_env=$src/images.env bundle_images=1
    ! grep -qvE '^(#.*|AURORA_IMAGE_[A-Z0-9_]+=[^[:space:]]+|)$' "$image_env" \
      || die "the release at $bundle has an images.env with lines that are not AURORA_IMAGE_NAME=image:tag"
  fi
  local cli_src=""
  if [ -n "$src" ]; then
    for c in "$src/bin/aurora-cli" "$src/target/release/aurora-cli" "$src/target/debug/aurora-cli"; do
      [ -x "$c" ] && { cli_src=$c; break; }
    done
    [ -n "$cli_src" ] || die "the release at $bundle has no bin/aurora-cli"
  fi

  # --- images -------------------------------------------------------------------
  if [ -n "$images" ]; then
    step "loading pre-staged images from $images"
    act docker load -q -i "$images" >/dev/null
  fi

  # --- files ----------------------------------------------------------------------
  local state=$prefix/state
  # What the uninstaller removes outside $prefix, one path a line.
  local manifest=$prefix/.installed
  if [ -n "$src" ] && [ "$(cd "$src" && pwd)" != "$prefix" ]; then
    act mkdir -p "$prefix/compose" "$prefix/bin"
    act cp -R "$src/compose/." "$prefix/compose/"
    act install -m 0755 "$cli_src" "$prefix/bin/aurora-cli"
    [ -z "$bundle_images" ] || act install -m 0644 "$src/images.env" "$prefix/images.env"
    # The installer and uninstaller themselves, for reruns (--rotate-credentials,
    # new --members) and removal.
    if [ -f "$src/bootstrap/bootstrap.sh" ]; then
      act install -d -m 0755 "$prefix/bootstrap"
      act install -m 0755 "$src/bootstrap/bootstrap.sh" "$src/bootstrap/uninstall.sh" "$prefix/bootstrap/"
    fi
  elif [ -z "$src" ]; then
    act mkdir -p "$prefix/compose" "$prefix/bin"
    printf '[dry-run] unpack compose/ and bin/aurora-cli from the release into %s\n' "$prefix"
  fi

  if [ -n "$rotate" ] && [ -s "$state/secrets/node.env" ]; then
    step "rotating this node's secrets (Redis, Grafana); the fleet-wide ones follow docs/runbooks/rotate-credentials.md"
    act mv "$state/secrets/node.env" "$state/secrets/node.env.rotated-$(date -u +%Y%m%dT%H%M%SZ)"
  fi
  if [ -n "$joining" ]; then
    step "joining the fleet at ${join_url:-the endpoint the token names} (its certificate is checked first)"
    act "$prefix/compose/node-init.sh" --state-dir "$state" --wg-key-only >&2
    local jargs=(join --name "$name" --role "$role" --wg-public-key-file "$state/secrets/wireguard/public.key" --out "$state/join")
    [ -z "$join_url" ] || jargs+=(--url "$join_url")
    [ -z "$vpn_ip" ] || jargs+=(--vpn-ip "$vpn_ip")
    [ -z "$wg_endpoint" ] || jargs+=(--wg-endpoint "$wg_endpoint")
    if [ -n "$dry_run" ]; then
      printf '[dry-run] %s %s (the token from --token, by environment)\n' "$prefix/bin/aurora-cli" "${jargs[*]}"
      vpn_ip=${vpn_ip:-"<the address the fleet picks>"}; members="<the members the fleet sends>"
    else
      # The token goes by environment: never in argv, where ps shows it.
      AURORA_JOIN_TOKEN=$join_token "$prefix/bin/aurora-cli" "${jargs[@]}" >&2 \
        || die "the fleet did not admit this node (the reason is above); nothing was started. A refused token stays usable; a spent or expired one needs a new token"
      answer() { sed -n "s/^$1=//p" "$state/join/answer.env"; }
      vpn_ip=$(answer VPN_IP); vpn_network=$(answer VPN_NETWORK); zone=$(answer ZONE)
      members=$(paste -sd, "$state/join/members")
      fleet_env=$state/join/fleet.env
      [ -n "$wg_peers" ] || wg_peers=$state/join/peers.conf
      if [ -s "$state/join/join.key" ]; then
        # A backup serves joins too, with the fleet's certificate.
        install -d -m 700 "$state/secrets/join"
        install -m 600 "$state/join/join.crt" "$state/join/join.key" "$state/secrets/join/"
      fi
      say "joined: $name is $vpn_ip in $vpn_network; the fleet: $members"
    fi
  fi
  local init=(--state-dir "$state" --name "$name" --role "$role" --vpn-ip "$vpn_ip"
    --members "$members" --zone "$zone" --vpn-network "$vpn_network")
  # The node's settings: a rerun without --set keeps the last install's;
  # the images come from --image-env or the release when either names
  # them, else stay as they were.
  local node_sets=()
  if [ ${#sets[@]} -eq 0 ] && [ ${#previous_sets[@]} -gt 0 ]; then
    for kv in "${previous_sets[@]}"; do
      if [ -n "$image_env" ]; then case "$kv" in AURORA_IMAGE_*=*) continue ;; esac; fi
      node_sets+=("$kv")
    done
  else
    [ -n "$compose_file_set" ] || node_sets+=("COMPOSE_FILE=$prefix/compose/compose.yaml")
    node_sets+=("${sets[@]+"${sets[@]}"}")
  fi
  if [ -n "$image_env" ]; then
    while IFS= read -r line; do
      case "$line" in AURORA_IMAGE_*=*) node_sets+=("$line") ;; esac
    done < "$image_env"
  fi
  for kv in "${node_sets[@]}"; do init+=(--set "$kv"); done
  [ -z "$fleet_env" ] || init+=(--fleet-env "$fleet_env")
  [ -z "$wg_endpoint" ] || init+=(--wg-endpoint "$wg_endpoint")
  [ -z "$wg_peers" ] || init+=(--wg-peers "$wg_peers")
  step "writing the node's state and secrets under $state"
  local before=""
  [ ! -d "$state/env" ] || before=$(cd "$state/env" && cksum ./*.env 2>/dev/null || true)
  act "$prefix/compose/node-init.sh" "${init[@]}" >&2
  if [ -z "$dry_run" ]; then
    {
      echo "# bootstrap.sh's answers for this node: a rerun starts from them."
      echo "NAME=$name"
      echo "ROLE=$role"
      echo "VPN_IP=$vpn_ip"
      echo "VPN_NETWORK=$vpn_network"
      echo "ZONE=$zone"
      echo "MEMBERS=$members"
      echo "WG_ENDPOINT=$wg_endpoint"
      echo "SERVICES=$services"
      for kv in "${node_sets[@]}"; do echo "SET=$kv"; done
    } > "$answers.tmp" && mv -f "$answers.tmp" "$answers"
  fi
  if [ -n "$rotate" ] && [ -z "$dry_run" ]; then
    local after changed
    after=$(cd "$state/env" && cksum ./*.env)
    changed=$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") | sed -n 's|^> .* \./\(.*\)\.env$|\1|p' | sort -u | tr '\n' ' ' || true)
    say "new secrets for: ${changed:-nothing}; starting the stack recreates exactly those services"
    say "grafana keeps the admin password it stored at first start: the installer resets it after the restart"
  fi

  # aurora-cli's config and credentials: root's only.
  local token="" pg_pass="" redis_pass="" grafana_pass=""
  if [ -z "$dry_run" ]; then
    token=$(sed -n 's/^ADMIN_TOKEN=//p' "$state/secrets/fleet.env")
    pg_pass=$(sed -n 's/^POSTGRES_PASSWORD=//p' "$state/secrets/fleet.env")
    redis_pass=$(sed -n 's/^REDIS_PASSWORD=//p' "$state/secrets/node.env")
    grafana_pass=$(sed -n 's/^GRAFANA_ADMIN_PASSWORD=//p' "$state/secrets/node.env")
    port() { sed -n "s/^AURORA_PORT_$1=//p" "$state/node.env" | tail -n 1; }
    local p_repl p_health p_assets p_dns dns_url=""
    p_repl=$(port REPL_MANAGER); p_health=$(port HEALTH_MONITOR); p_assets=$(port ASSET_SYNC); p_dns=$(port DNS_SYNC)
    [ "$role" = compute ] || dns_url="http://127.0.0.1:${p_dns:-8012}"
    write_private() { # path: stdin into path, mode 600, replaced atomically
      local f=$1
      mkdir -p "$(dirname "$f")"
      ( umask 077; cat > "$f.tmp" )
      mv -f "$f.tmp" "$f"
    }
    write_private "$etc_dir/node.toml" <<EOF
# aurora-cli's view of this node, written by bootstrap.sh (a rerun rewrites it).
[node]
name = "$name"
role = "$role"

[admin]
token = "$token"

[sidecars]
repl_manager = "http://127.0.0.1:${p_repl:-8008}"
health_monitor = "http://127.0.0.1:${p_health:-8011}"
asset_sync = "http://127.0.0.1:${p_assets:-8010}"
dns_sync = "$dns_url"

[compose]
project_dir = "$prefix/compose"
env_file = "$state/node.env"

[backup]
dsn = "host=127.0.0.1 port=$(port POSTGRES | grep . || echo 5432) user=postgres password=$pg_pass"
assets_dir = "$(sed -n 's/^AURORA_ASSETS_DIR=//p' "$state/node.env" | tail -n 1)/mirror"
config_dir = "$state"
EOF
    write_private "$prefix/.credentials" <<EOF
# Aurora Node credentials for $name ($role). Keep this file private (mode 600).
# Fleet-wide (the same on every node):
ADMIN_TOKEN=$token
POSTGRES_PASSWORD=$pg_pass
# This node's own:
REDIS_PASSWORD=$redis_pass
GRAFANA_ADMIN_PASSWORD=$grafana_pass
EOF
    mkdir -p "$bin_dir"
    ln -sfn "$prefix/bin/aurora-cli" "$bin_dir/aurora-cli"
    printf '%s\n' "$etc_dir/node.toml" "$bin_dir/aurora-cli" > "$manifest"
  else
    printf '[dry-run] write %s (aurora-cli config, mode 600) and %s (mode 600)\n' "$etc_dir/node.toml" "$prefix/.credentials"
    printf '[dry-run] link %s -> %s\n' "$bin_dir/aurora-cli" "$prefix/bin/aurora-cli"
  fi

  # --- start ----------------------------------------------------------------------
  if [ -n "$no_start" ]; then
    step "not starting the stack (--no-start): docker compose --env-file $state/node.env up -d"
  else
    step "starting the stack"
    act docker compose --env-file "$state/node.env" up -d --remove-orphans "${svc_list[@]+"${svc_list[@]}"}"
    if [ -z "$dry_run" ]; then
      step "waiting for every service to be healthy (a replica's first clone can take minutes)"
      local deadline=$(( SECONDS + ${INSTALL_AURORA_WAIT_SECS:-900} )) unhealthy listed
      while :; do
        listed=$(docker compose --env-file "$state/node.env" ps --format '{{.Service}} {{.Health}} {{.State}}' 2>/dev/null || true)
        if [ -z "$listed" ]; then
          unhealthy="(no service is running)"
        else
          unhealthy=$(printf '%s\n' "$listed" | awk '$2 != "healthy" && !($2 == "" && $3 == "running") {print $1}' | tr '\n' ' ')
        fi
        [ -n "$unhealthy" ] || break
        if [ "$SECONDS" -ge "$deadline" ]; then
          die "not healthy after ${INSTALL_AURORA_WAIT_SECS:-900} s: $unhealthy; see: docker compose --env-file $state/node.env logs $unhealthy"
        fi
        sleep 3
      done
    fi
  fi

  if [ -n "$rotate" ] && [ -z "$dry_run" ] && [ -z "$no_start" ]; then
    # Not through act: the password is not printed.
    docker compose --env-file "$state/node.env" exec -T grafana grafana cli admin reset-admin-password "$grafana_pass" >/dev/null 2>&1 \
      || say "warning: could not reset Grafana's stored admin password; run: docker compose --env-file $state/node.env exec grafana grafana cli admin reset-admin-password '<the password in $prefix/.credentials>'"
  fi
  # --- the asset origin: Garage on the lead and the backup --------------------------
  # Laid out by aurora-cli (connect, a zone per node, apply, the fleet's key,
  # the bucket); a rerun changes nothing. A lead planned with a backup
  # stages itself and waits for the backup's install, which brings the
  # lead's Garage as --garage-peer.
  local with_garage=""
  if [ "$role" != compute ] && [ -z "$no_start" ]; then
    with_garage=1
    if [ ${#svc_list[@]} -gt 0 ]; then
      with_garage=""
      for kv in "${svc_list[@]}"; do [ "$kv" != garage ] || with_garage=1; done
    fi
  fi
  if [ -n "$with_garage" ]; then
    local origin=("$bin_dir/aurora-cli" --config "$etc_dir/node.toml" asset-origin setup --fleet-env "$state/secrets/fleet.env")
    [ -z "$garage_peer" ] || origin+=(--peer "$garage_peer")
    step "laying out the asset origin (Garage)${garage_peer:+ with the Garage of ${garage_peer%%=*}}"
    if [ -n "$dry_run" ]; then
      printf '[dry-run] %s\n' "${origin[*]}"
    else
      local origin_out="" origin_ok=1 my_garage
      origin_out=$("${origin[@]}" 2>&1) || origin_ok=""
      printf '%s\n' "$origin_out" >&2
      my_garage=$(printf '%s\n' "$origin_out" | sed -n "s/^this node's Garage: //p" | tail -n 1)
      if [ -z "$origin_ok" ]; then
        say "warning: the asset origin is not laid out (the reason is above); the database and the rest run. Once fixed: aurora-cli asset-origin setup${garage_peer:+ --peer $garage_peer} (docs/runbooks/add-a-node.md)"
      elif [ -n "$my_garage" ] && printf '%s\n' "$origin_out" | grep -q '^asset origin pending'; then
        if [ "$role" = lead ]; then
          say "the asset origin waits for the backup: install it with --garage-peer $my_garage"
        else
          say "the asset origin waits for the lead's Garage: on the lead, run aurora-cli asset-origin setup --peer $my_garage"
        fi
      fi
    fi
  fi
  if [ -z "$dry_run" ] && [ -z "$no_start" ]; then
    "$bin_dir/aurora-cli" --config "$etc_dir/node.toml" status || true
  fi
  step "done in $(( SECONDS - started )) s${dry_run:+ (dry run: nothing was changed)}"
  say "credentials: $prefix/.credentials (mode 600); aurora-cli config: $etc_dir/node.toml"
  if [ -z "$dry_run" ]; then
    say "this node's WireGuard peer, for every other node's peers.static.conf (docs/runbooks/add-a-node.md):"
    printf '[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\n%s\n' "$(cat "$state/secrets/wireguard/public.key")" "$vpn_ip" \
      "${wg_endpoint:+Endpoint = $wg_endpoint}" >&2
  fi
  if [ "$role" = lead ] && [ -z "$dry_run" ] && [ -z "$no_start" ]; then
    # The first join token, so the next node is one command away.
    # A lead alone in its member list takes writes at once (a few tries
    # cover its first seconds). One whose --members plans more nodes is
    # fenced, read-only, until a majority of them is up: no token then.
    local first_token="" token_deadline=$(( SECONDS + ${INSTALL_AURORA_TOKEN_WAIT_SECS:-20} ))
    until first_token=$("$bin_dir/aurora-cli" --config "$etc_dir/node.toml" join-token create --ttl 1h 2>/dev/null); do
      [ "$SECONDS" -lt "$token_deadline" ] || break
      sleep 3
    done
    if [ -n "$first_token" ]; then
      say "a join token for the next node (one use, valid for an hour; \`aurora-cli join-token create\` makes more):"
      printf '%s\n' "$first_token"
      say "on the new node: bootstrap.sh --token '<that token>' --name NAME --role backup|compute --wg-endpoint HOST:51820"
    else
      say "no join token yet: the lead takes writes only once a majority of its members is up (or health-monitor is not answering yet). With more members planned, join the first one by hand (docs/runbooks/add-a-node.md), then run \`aurora-cli join-token create\`"
    fi
  fi
}

aurora_bootstrap "$@" --aurora-bootstrap-end-of-script
