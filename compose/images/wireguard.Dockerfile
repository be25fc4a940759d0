# The node's WireGuard endpoint: the kernel module where the host has it,
# else the userspace wireguard-go (needs /dev/net/tun and NET_ADMIN).
# Every service of the node shares this container's network namespace, so
# the VPN address is theirs too. The entrypoint keeps the interface's peers
# in step with the peer file health-monitor writes from the node registry.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS test
COPY wireguard-entrypoint.sh /usr/local/bin/wireguard-entrypoint
# health-monitor (uid 10001) writes the peer file into this volume.
COPY --chown=10001:10001 dirs/ /
ENTRYPOINT ["/usr/local/bin/wireguard-entrypoint"]

FROM ${BASE} AS production
# Debian stable's packages: the suite pins them (security updates only).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends wireguard-tools wireguard-go iproute2 iptables wget \
 && rm -rf /var/lib/apt/lists/*
COPY wireguard-entrypoint.sh /usr/local/bin/wireguard-entrypoint
COPY --chown=10001:10001 dirs/ /
ENTRYPOINT ["/usr/local/bin/wireguard-entrypoint"]
