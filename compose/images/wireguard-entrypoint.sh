#!/bin/sh
# The node's WireGuard interface, wg0, in the network namespace every
# service of the node shares (compose.yaml).
#   - the kernel's WireGuard where the host has it, else wireguard-go;
#   - address $WG_ADDRESS (e.g. 10.0.0.3/24), port $WG_LISTEN_PORT;
#   - private key: /etc/aurora/wireguard/private.key (never printed);
#   - peers: the static ones from the install (peers.static.conf: enough to
#     reach the lead on a first start) plus the file health-monitor renders
#     from the node registry (/var/lib/aurora/wireguard/peers.conf), applied
#     with `wg syncconf` whenever either changes (the registry's entry for a
#     key wins).
set -eu

IFACE=wg0
KEY=/etc/aurora/wireguard/private.key
STATIC=/etc/aurora/wireguard/peers.static.conf
DYNAMIC=/var/lib/aurora/wireguard/peers.conf
: "${WG_ADDRESS:?set WG_ADDRESS to the VPN address of this node with its prefix, e.g. 10.0.0.3/24}"
PORT=${WG_LISTEN_PORT:-51820}

log() { echo "wireguard: $*" >&2; }

[ -s "$KEY" ] || { log "no private key at $KEY"; exit 2; }

if ip link add "$IFACE" type wireguard 2>/dev/null; then
  log "kernel WireGuard"
else
  [ -c /dev/net/tun ] || { log "no WireGuard in the kernel and no /dev/net/tun for wireguard-go (devices: [/dev/net/tun])"; exit 2; }
  log "no WireGuard in the kernel: userspace wireguard-go"
  WG_PROCESS_FOREGROUND=1 wireguard-go "$IFACE" &
  # The TUN device appears before wireguard-go's control socket; `wg`
  # talks to the socket ("Protocol not supported" until it exists).
  i=0
  until ip link show "$IFACE" >/dev/null 2>&1 && [ -S "/var/run/wireguard/$IFACE.sock" ] \
      && wg show "$IFACE" >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { log "wireguard-go did not create $IFACE"; exit 1; }
    sleep 0.1
  done
fi
wg set "$IFACE" private-key "$KEY" listen-port "$PORT"
ip address add "$WG_ADDRESS" dev "$IFACE"
ip link set "$IFACE" up
log "$IFACE up at $WG_ADDRESS, port $PORT/udp"

# Peers: [Peer] sections of both files, keyed by PublicKey; the dynamic
# file entry wins. [Interface] sections are ignored (the key is ours).
# shellcheck disable=SC2016
render() {
  printf '[Interface]\nListenPort = %s\nPrivateKey = %s\n' "$PORT" "$(cat "$KEY")"
  for f in "$STATIC" "$DYNAMIC"; do [ -r "$f" ] && cat "$f"; echo; done | awk '
    /^\[/ { flush(); section = $0; body = ""; key = ""; next }
    section == "[Peer]" && /^[ \t]*PublicKey[ \t]*=/ { key = $0; sub(/^[^=]*=[ \t]*/, "", key) }
    section == "[Peer]" { body = body $0 "\n" }
    function flush() { if (section == "[Peer]" && key != "") { if (!(key in seen)) order[n++] = key; seen[key] = body } }
    END { flush(); for (i = 0; i < n; i++) printf "\n[Peer]\n%s", seen[order[i]] }'
}

running=1
trap 'running=0' TERM INT
last=""
conf=$(mktemp)
while [ "$running" -eq 1 ]; do
  sum=$(cat "$STATIC" "$DYNAMIC" 2>/dev/null | cksum)
  if [ "$sum" != "$last" ]; then
    (umask 077; render > "$conf")
    if wg syncconf "$IFACE" "$conf"; then
      last=$sum
      log "peers applied: $(grep -c '^\[Peer\]' "$conf") peer(s)"
    else
      log "wg syncconf failed; keeping the previous peers"
    fi
    : > "$conf"
  fi
  sleep 2 &
  wait $! || true
done
log "stopping"
ip link del "$IFACE" 2>/dev/null || true
