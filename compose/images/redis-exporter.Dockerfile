# Test stand-in for the pinned redis_exporter image, from Debian's package.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS test
USER nobody
ENTRYPOINT ["prometheus-redis-exporter"]
