# Test stand-in for the pinned node-exporter image, from Debian's package.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS test
USER nobody
ENTRYPOINT ["prometheus-node-exporter"]
