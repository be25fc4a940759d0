# Test stand-in for the pinned Alertmanager image, from Debian's package.
ARG BASE=debian:bookworm-slim
FROM ${BASE} AS test
RUN mkdir -p /alertmanager && chown -R nobody:nogroup /alertmanager
USER nobody
WORKDIR /alertmanager
ENTRYPOINT ["prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
