# Test stand-in for the pinned Redis image, from Debian's redis-server.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS test
RUN mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
ENTRYPOINT ["redis-server"]
