#!/usr/bin/env bash
# Renders one node's state directory: everything compose.yaml reads that is
# not in the repository (the installer runs this; so do the tests).
#
#   compose/node-init.sh --state-dir /opt/aurora --name aurora --role lead --vpn-ip 10.0.0.1 \
#     [--members "aurora lead 10.0.0.1,star backup 10.0.0.2"] [--zone aurora.internal] \
#     [--vpn-network 10.0.0.0/24] [--fleet-env FILE] [--wg-endpoint HOST:PORT] \
#     [--wg-peers FILE] [--alert-email ADDR] [--set KEY=VALUE]...
#   compose/node-init.sh --state-dir DIR --wg-key-only   # only the WireGuard key pair
#                         (a joining node sends its public key before it has the rest)
#
# Writes (secrets mode 600, never into compose.yaml):
#   node.env              the variables compose.yaml interpolates (--env-file)
#   env/<service>.env     one per service: its secrets and AURORA_CONFIG
#   config/*.toml|yml     the sidecars', Prometheus', Alertmanager's and Garage's config
#   secrets/fleet.env     the fleet-wide secrets: generated on a lead when
#                         --fleet-env is not given, else copied from it (a
#                         joining node gets them from the fleet, never anew)
#   secrets/node.env      this node's own secrets (Redis, Grafana)
#   secrets/wireguard/    this node's WireGuard key pair and static peers
# A rerun keeps every secret that exists (nothing rotates by accident) and
# rewrites the rest from the arguments.
set -euo pipefail

die() { printf 'node-init: %s\n' "$*" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
state=""; name=""; role=""; vpn_ip=""; members=""; zone=aurora.internal
vpn_network=10.0.0.0/24; fleet_env=""; wg_endpoint=""; wg_peers=""; alert_email=""
extra=(); wg_key_only=""

while [ $# -gt 0 ]; do
  case "$1" in
    --state-dir) state=${2:?}; shift 2 ;;
    --name) name=${2:?}; shift 2 ;;
    --role) role=${2:?}; shift 2 ;;
    --vpn-ip) vpn_ip=${2:?}; shift 2 ;;
    --members) members=${2:?}; shift 2 ;;
    --zone) zone=${2:?}; shift 2 ;;
    --vpn-network) vpn_network=${2:?}; shift 2 ;;
    --fleet-env) fleet_env=${2:?}; shift 2 ;;
    --wg-endpoint) wg_endpoint=${2:?}; shift 2 ;;
    --wg-peers) wg_peers=${2:?}; shift 2 ;;
    --alert-email) alert_email=${2:?}; shift 2 ;;
    --set) extra+=("${2:?}"); shift 2 ;;
    --wg-key-only) wg_key_only=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

# This node's WireGuard key pair: made once, kept across reruns.
wg_keys() {
  mkdir -p "$state/secrets/wireguard"
  chmod 700 "$state/secrets"
  wg_key="$state/secrets/wireguard/private.key"
  if [ ! -s "$wg_key" ]; then
    if command -v wg >/dev/null; then
      wg genkey > "$wg_key"
    else
      docker run --rm --network none --entrypoint wg "${AURORA_IMAGE_WIREGUARD:-aurora-node/wireguard:0.1.0}" genkey > "$wg_key" \
        || die "cannot generate a WireGuard key: install wireguard-tools (wg)"
    fi
  fi
  if command -v wg >/dev/null; then
    wg pubkey < "$wg_key" > "$state/secrets/wireguard/public.key"
  else
    docker run --rm -i --network none --entrypoint wg "${AURORA_IMAGE_WIREGUARD:-aurora-node/wireguard:0.1.0}" pubkey \
      < "$wg_key" > "$state/secrets/wireguard/public.key"
  fi
  chmod 644 "$state/secrets/wireguard/public.key"
}

if [ -n "$wg_key_only" ]; then
  [ -n "$state" ] || die "--state-dir is required"
  umask 077
  wg_keys
  exit 0
fi

[ -n "$state" ] || die "--state-dir is required"
[[ "$name" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "--name '$name' is not a DNS label (a-z, 0-9, -)"
case "$role" in lead|backup|compute) ;; *) die "--role '$role' must be lead, backup or compute" ;; esac
[[ "$vpn_ip" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || die "--vpn-ip '$vpn_ip' is not an IPv4 address"
[[ "$zone" =~ ^[a-z0-9.-]+$ ]] || die "--zone '$zone' is not a DNS name"
[ -n "$members" ] || members="$name $role $vpn_ip"
[ -z "$fleet_env" ] || [ -r "$fleet_env" ] || die "--fleet-env $fleet_env cannot be read"
for kv in "${extra[@]+"${extra[@]}"}"; do
  [[ "$kv" =~ ^[A-Z][A-Z0-9_]*=.*$ ]] || die "--set '$kv' is not KEY=VALUE"
done
if [ "$role" != lead ] && [ -z "$fleet_env" ] && [ ! -s "$state/secrets/fleet.env" ]; then
  die "a $role node joins a fleet: pass the lead's secrets with --fleet-env"
fi

# 32 bytes from the kernel's CSPRNG as hex (64 characters).
secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

umask 077
mkdir -p "$state"/env "$state"/config "$state"/secrets/wireguard "$state"/secrets/alertmanager
chmod 700 "$state"/env "$state"/secrets

# Garage's copies of every object: two when the fleet plans a backup. Fixed
# at the lead's first install and carried in fleet.env to every node that
# runs Garage: Garage refuses to start on a laid-out cluster whose factor
# changed (a rerun with a backup added to --members), and a node with a
# higher factor than its peer makes the peer shut down.
planned_rf=1
case ",$members," in *" backup "*) planned_rf=2 ;; esac

# --- secrets (kept across reruns) --------------------------------------------
if [ ! -s "$state/secrets/fleet.env" ]; then
  if [ -n "$fleet_env" ]; then
    cp "$fleet_env" "$state/secrets/fleet.env"
  elif [ "$role" = lead ]; then
    {
      echo "ADMIN_TOKEN=$(secret)"
      echo "REPLICATION_PASSWORD=$(secret)"
      echo "POSTGRES_PASSWORD=$(secret)"
      echo "GARAGE_RPC_SECRET=$(secret)"
      echo "GARAGE_ADMIN_TOKEN=$(secret)"
      echo "S3_ACCESS_KEY_ID=GK$(hex 12)"
      echo "S3_SECRET_ACCESS_KEY=$(secret)"
      echo "GARAGE_REPLICATION_FACTOR=$planned_rf"
    } > "$state/secrets/fleet.env"
  else
    die "a $role node joins a fleet: pass the lead's secrets with --fleet-env"
  fi
fi
if [ ! -s "$state/secrets/node.env" ]; then
  { echo "REDIS_PASSWORD=$(secret)"; echo "GRAFANA_ADMIN_PASSWORD=$(secret)"; } > "$state/secrets/node.env"
fi
# shellcheck disable=SC1091
. "$state/secrets/fleet.env"
# shellcheck disable=SC1091
. "$state/secrets/node.env"
if [ "$role" != compute ] && [ -z "${GARAGE_REPLICATION_FACTOR:-}" ]; then
  # A fleet installed before the factor travelled with it: keep the factor
  # this node's Garage already runs with, else the one the members plan;
  # the lead records it for the nodes that join from now on.
  existing_rf=""
  if [ -r "$state/config/garage.toml" ]; then
    existing_rf=$(sed -n 's/^replication_factor = \([0-9]\)$/\1/p' "$state/config/garage.toml" | head -n 1)
  fi
  GARAGE_REPLICATION_FACTOR=${existing_rf:-$planned_rf}
  if [ "$role" = lead ]; then
    echo "GARAGE_REPLICATION_FACTOR=$GARAGE_REPLICATION_FACTOR" >> "$state/secrets/fleet.env"
  fi
fi
case "${GARAGE_REPLICATION_FACTOR:-1}" in
  1|2|3) ;;
  *) die "GARAGE_REPLICATION_FACTOR '$GARAGE_REPLICATION_FACTOR' in $state/secrets/fleet.env must be 1, 2 or 3" ;;
esac
# A compute node runs no Garage: a joined one holds no Garage secret.
needed="ADMIN_TOKEN REPLICATION_PASSWORD POSTGRES_PASSWORD S3_ACCESS_KEY_ID S3_SECRET_ACCESS_KEY REDIS_PASSWORD GRAFANA_ADMIN_PASSWORD"
[ "$role" = compute ] || needed="$needed GARAGE_RPC_SECRET GARAGE_ADMIN_TOKEN"
for v in $needed; do
  [ -n "${!v:-}" ] || die "$v is missing from $state/secrets (fleet.env or node.env)"
done

wg_keys
if [ -n "$wg_peers" ]; then cp "$wg_peers" "$state/secrets/wireguard/peers.static.conf"; fi
[ -e "$state/secrets/wireguard/peers.static.conf" ] || : > "$state/secrets/wireguard/peers.static.conf"
# Alertmanager runs as nobody (65534) in its image: its secret files are
# that user's, mode 600.
for f in slack_webhook_url smtp_password; do
  [ -e "$state/secrets/alertmanager/$f" ] || : > "$state/secrets/alertmanager/$f"
done
chown -R 65534:65534 "$state/secrets/alertmanager" 2>/dev/null || true

# The join endpoint (lead and backup): health-monitor (uid 10001 in its
# image) reads the fleet secrets it hands to joining nodes from here and
# keeps the fleet's join certificate here (made at the lead's first start;
# a backup brings the lead's, received when it joined).
if [ "$role" != compute ]; then
  mkdir -p "$state/secrets/join"
  cp "$state/secrets/fleet.env" "$state/secrets/join/fleet.env"
  chmod 700 "$state/secrets/join"
  chmod 600 "$state/secrets/join"/*
  chown -R 10001:10001 "$state/secrets/join" 2>/dev/null || true
fi

# The asset mirror: mirror/ is what gets served (world-readable), state/ is
# asset-sync's manifest, lock and staging (its own). Both under one
# directory, bind-mounted whole into asset-sync, which runs as 10001. Only
# these three directories are chowned: a rerun never walks the mirror.
assets_dir="$state/assets"
for kv in "${extra[@]+"${extra[@]}"}"; do
  [ "${kv%%=*}" = AURORA_ASSETS_DIR ] && assets_dir=${kv#*=}
done
case "$assets_dir" in /*) ;; *) die "AURORA_ASSETS_DIR '$assets_dir' must be an absolute path" ;; esac
mkdir -p "$assets_dir/mirror" "$assets_dir/state"
chmod 755 "$assets_dir" "$assets_dir/mirror"
chmod 700 "$assets_dir/state"
chown 10001:10001 "$assets_dir" "$assets_dir/mirror" "$assets_dir/state" 2>/dev/null || true

# --- the fleet, from --members ------------------------------------------------
prefix=${vpn_network#*/}
pg_hosts=""; lead_ip=""; lead_name=""; backup_ip=""; me_found=0
IFS=',' read -r -a member_list <<<"$members"
for m in "${member_list[@]}"; do
  read -r m_name m_role m_ip <<<"$m"
  [ -n "${m_ip:-}" ] || die "--members entry '$m' is not 'name role vpn-ip'"
  case "$m_role" in
    lead) lead_ip=$m_ip; lead_name=$m_name; pg_hosts="$m_ip${pg_hosts:+,$pg_hosts}" ;;
    backup) backup_ip=$m_ip; pg_hosts="${pg_hosts:+$pg_hosts,}$m_ip" ;;
  esac
  [ "$m_name" = "$name" ] && me_found=1
done
[ "$me_found" -eq 1 ] || die "--members does not list this node ($name)"
[ -n "$lead_ip" ] || die "--members has no lead"
pg_ports=$(printf '%s' "$pg_hosts" | tr -c ',' 'x' | sed 's/x\+/5432/g')
write_dsn="host=$pg_hosts port=$pg_ports user=postgres dbname=postgres target_session_attrs=read-write password=$POSTGRES_PASSWORD"
local_dsn="host=127.0.0.1 port=5432 user=postgres dbname=postgres password=$POSTGRES_PASSWORD"
# The asset origins, in order: this node's own Garage where it runs one,
# then the lead's, then the backup's (the mirror).
origins=""
case "$role" in lead|backup) origins="http://127.0.0.1:3900" ;; esac
for ip in "$lead_ip" "$backup_ip"; do
  [ -n "$ip" ] && [ "$ip" != "$vpn_ip" ] && origins+="${origins:+,}http://$ip:3900"
done
first_origin=${origins%%,*}
fallbacks=""
if [ "$origins" != "$first_origin" ]; then
  fallbacks=$(printf '%s' "${origins#*,}" | sed 's/[^,]*/"&"/g; s/,/, /g')
fi

# --- node.env: what compose.yaml interpolates ----------------------------------
# A --set value replaces the default of the same name.
given() { local kv; for kv in "${extra[@]+"${extra[@]}"}"; do [ "${kv%%=*}" = "$1" ] && return 0; done; return 1; }
{
  echo "AURORA_STATE_DIR=$state"
  echo "AURORA_VPN_IP=$vpn_ip"
  given AURORA_ASSETS_DIR || echo "AURORA_ASSETS_DIR=$assets_dir"
  given AURORA_PROJECT || echo "AURORA_PROJECT=aurora-$name"
  given COMPOSE_PROFILES || echo "COMPOSE_PROFILES=$role"
  if ! given AURORA_ALERTMANAGER_PEER; then
    if [ "$role" = lead ] && [ -n "$backup_ip" ]; then echo "AURORA_ALERTMANAGER_PEER=$backup_ip:9094"; fi
    if [ "$role" = backup ]; then echo "AURORA_ALERTMANAGER_PEER=$lead_ip:9094"; fi
  fi
  for kv in "${extra[@]+"${extra[@]}"}"; do echo "$kv"; done
} > "$state/node.env"

# --- one env file per service ---------------------------------------------------
{
  echo "WG_ADDRESS=$vpn_ip/$prefix"
  echo "WG_LISTEN_PORT=51820"
} > "$state/env/wireguard.env"
{
  echo "AURORA_CONFIG=/etc/aurora/repl-manager.toml"
  echo "AURORA_ADMIN__TOKEN=$ADMIN_TOKEN"
  echo "AURORA_POSTGRES__REPLICATION_PASSWORD=$REPLICATION_PASSWORD"
  echo "AURORA_POSTGRES__SUPERUSER_PASSWORD=$POSTGRES_PASSWORD"
} > "$state/env/repl-manager.env"
echo "REDIS_PASSWORD=$REDIS_PASSWORD" > "$state/env/redis.env"
{
  echo "AURORA_CONFIG=/etc/aurora/asset-sync.toml"
  echo "AURORA_ADMIN__TOKEN=$ADMIN_TOKEN"
  echo "AURORA_S3__ACCESS_KEY_ID=$S3_ACCESS_KEY_ID"
  echo "AURORA_S3__SECRET_ACCESS_KEY=$S3_SECRET_ACCESS_KEY"
} > "$state/env/asset-sync.env"
{
  echo "AURORA_CONFIG=/etc/aurora/health-monitor.toml"
  echo "AURORA_ADMIN__TOKEN=$ADMIN_TOKEN"
  echo "AURORA_DATABASE__LOCAL_DSN=$local_dsn"
  echo "AURORA_DATABASE__WRITE_DSN=$write_dsn"
  echo "AURORA_CHECKS__REDIS_PASSWORD=$REDIS_PASSWORD"
} > "$state/env/health-monitor.env"
{
  echo "AURORA_CONFIG=/etc/aurora/dns-sync.toml"
  echo "AURORA_ADMIN__TOKEN=$ADMIN_TOKEN"
  echo "AURORA_DATABASE__DSN=$local_dsn"
  # When this node's own PostgreSQL is down (the old lead after a failover),
  # the zone comes from whichever candidate is the writable primary.
  echo "AURORA_DATABASE__FALLBACK_DSN=$write_dsn"
} > "$state/env/dns-sync.env"
# The exporters read their targets' passwords from their own env files.
echo "DATA_SOURCE_NAME=postgresql://postgres:$POSTGRES_PASSWORD@127.0.0.1:5432/postgres?sslmode=disable" \
  > "$state/env/postgres-exporter.env"
{
  echo "REDIS_ADDR=redis://127.0.0.1:6379"
  echo "REDIS_PASSWORD=$REDIS_PASSWORD"
} > "$state/env/redis-exporter.env"
{
  echo "GF_SECURITY_ADMIN_USER=admin"
  echo "GF_SECURITY_ADMIN_PASSWORD=$GRAFANA_ADMIN_PASSWORD"
} > "$state/env/grafana.env"

# --- config files (no secrets: readable by the services' own users) ------------
umask 022
initdb=false; [ "$role" = lead ] && initdb=true
cat > "$state/config/repl-manager.toml" <<EOF
# Rendered by compose/node-init.sh; secrets come from env/repl-manager.env.
[node]
name = "$name"
state_file = "/var/lib/aurora/repl-manager/state.json"

[postgres]
data_dir = "/var/lib/postgresql/data/pgdata"
host = "127.0.0.1"
port = 5432
listen_addresses = "*"
supervision = "external"
hold_file = "/var/lib/postgresql/data/aurora.hold"
initdb = $initdb

[replication]
allowed_networks = ["$vpn_network"]
# Clients with a password: the VPN, and Docker's bridge networks, which the
# host's published 127.0.0.1 port arrives through.
client_networks = ["$vpn_network", "172.16.0.0/12", "192.168.0.0/16"]

[failover]
# Besides the backup, the lead may be promoted automatically: after a
# failover it is the new primary's synchronous standby, and the fleet must
# survive the next failure too. (Only a standby in sync is ever promoted.)
candidates = ["$lead_name"]

[admin]
listen = "0.0.0.0:8008"

[log]
format = "json"
EOF
# Members as TOML tables, one per node.
for m in "${member_list[@]}"; do
  read -r m_name m_role m_ip <<<"$m"
  printf '\n[[members]]\nname = "%s"\nrole = "%s"\nhost = "%s"\nport = 5432\napi_url = "http://%s:8008"\n' \
    "$m_name" "$m_role" "$m_ip" "$m_ip" >> "$state/config/repl-manager.toml"
done

cat > "$state/config/asset-sync.toml" <<EOF
[admin]
listen = "0.0.0.0:8010"

[log]
format = "json"

[s3]
endpoint = "$first_origin"
# Tried in order when the ones before cannot list the bucket.
fallback_endpoints = [$fallbacks]
region = "garage"
bucket = "assets"
force_path_style = true

[sync]
# Both on the one mount of \$AURORA_ASSETS_DIR (compose.yaml): served and
# staged files must share a filesystem and a mount.
target_dir = "/var/lib/aurora/assets/mirror"
state_dir = "/var/lib/aurora/assets/state"
interval_secs = 300
EOF

endpoint_line=""; [ -n "$wg_endpoint" ] && endpoint_line="wg_endpoint = \"$wg_endpoint\""
# New nodes reach the join endpoint where they reach WireGuard: the public
# host of --wg-endpoint, on AURORA_PORT_JOIN (published on every address).
join_section=""
if [ "$role" != compute ]; then
  join_port=$(printf '%s\n' "${extra[@]+"${extra[@]}"}" | sed -n 's/^AURORA_PORT_JOIN=//p' | tail -n 1)
  join_public=""
  [ -z "$wg_endpoint" ] || join_public="public_endpoint = \"${wg_endpoint%:*}:${join_port:-8443}\""
  join_section="
[join]
listen = \"0.0.0.0:8443\"
cert_file = \"/var/lib/aurora/join/join.crt\"
key_file = \"/var/lib/aurora/join/join.key\"
secrets_file = \"/var/lib/aurora/join/fleet.env\"
zone = \"$zone\"
$join_public"
fi
dns_sidecar=""; [ "$role" != compute ] && dns_sidecar='dns-sync = "http://127.0.0.1:8012"'
cat > "$state/config/health-monitor.toml" <<EOF
[admin]
listen = "0.0.0.0:8011"

[log]
format = "json"

[node]
name = "$name"
role = "$role"
vpn_ip = "$vpn_ip"
vpn_network = "$vpn_network"
wg_public_key = "$(cat "$state/secrets/wireguard/public.key")"
$endpoint_line

[checks]
interval_secs = 10
disks = ["/assets"]
redis = "127.0.0.1:6379"
repl_manager = "http://127.0.0.1:8008"

[checks.sidecars]
repl-manager = "http://127.0.0.1:8008"
asset-sync = "http://127.0.0.1:8010"
$dns_sidecar

[wireguard]
config_path = "/var/lib/aurora/wireguard/peers.conf"
listen_port = 51820

[prometheus]
sd_dir = "/var/lib/aurora/prometheus-sd"
$join_section
EOF

cat > "$state/config/dns-sync.toml" <<EOF
[admin]
listen = "0.0.0.0:8012"

[log]
format = "json"

[dns]
listen = "0.0.0.0:53"
zone = "$zone"
vpn_network = "$vpn_network"
axfr_allow = ["127.0.0.0/8", "$vpn_network"]
EOF

# Alerts go to the fleet's Alertmanagers (lead and backup, clustered).
alertmanagers="\"$lead_ip:9093\""
[ -n "$backup_ip" ] && alertmanagers+=", \"$backup_ip:9093\""
sed -e "s/@NODE@/$name/g" -e "s/@ROLE@/$role/g" -e "s/@ALERTMANAGERS@/$alertmanagers/g" \
  "$here/config/prometheus/prometheus.yml.in" > "$state/config/prometheus.yml"
if [ "$role" != compute ]; then
  cat "$here/config/prometheus/lead-and-backup.yml.in" >> "$state/config/prometheus.yml"
fi
if [ "$role" != compute ]; then
  sed -e "s/@NODE@/$name/g" "$here/config/prometheus/federate.yml.in" >> "$state/config/prometheus.yml"
fi
sed -e "s/@ALERT_EMAIL@/${alert_email:-root@localhost}/g" -e "s/@NODE@/$name/g" \
  "$here/config/alertmanager/alertmanager.yml.in" > "$state/config/alertmanager.yml"

umask 077
if [ "$role" != compute ]; then
cat > "$state/config/garage.toml" <<EOF
# Rendered by compose/node-init.sh (mode 600: it holds the RPC secret).
metadata_dir = "/var/lib/garage/meta"
data_dir = "/var/lib/garage/data"
db_engine = "sqlite"
replication_factor = $GARAGE_REPLICATION_FACTOR
rpc_bind_addr = "0.0.0.0:3901"
rpc_public_addr = "$vpn_ip:3901"
rpc_secret = "$GARAGE_RPC_SECRET"

[s3_api]
s3_region = "garage"
api_bind_addr = "0.0.0.0:3900"
root_domain = ".s3.garage"

[admin]
api_bind_addr = "127.0.0.1:3903"
admin_token = "$GARAGE_ADMIN_TOKEN"
EOF
fi
echo "node-init: $state ready for $name ($role, $vpn_ip)"
