# Test stand-in for the pinned postgres-exporter image, from Debian's package.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS test
USER nobody
ENTRYPOINT ["prometheus-postgres-exporter"]
