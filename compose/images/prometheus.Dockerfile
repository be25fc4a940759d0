# Test stand-in for the pinned Prometheus image, from Debian's prometheus
# (promtool included). Same paths as the production image.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS test
RUN mkdir -p /prometheus /etc/prometheus && chown -R nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
ENTRYPOINT ["prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
