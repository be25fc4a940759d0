# One image per sidecar (each can be swapped alone):
#   docker build -f sidecar.Dockerfile --build-arg SIDECAR=asset-sync --target production .
# Stages: `test` copies a binary built on the host (the test suite's own, so
# nothing is compiled twice); `production` compiles from source in the Rust
# image and runs on a distroless base. Both run as a non-root user and need
# no shell: the health check is the binary's own `healthcheck` subcommand.
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${BASE} AS test
ARG SIDECAR
COPY bin/${SIDECAR}.d/ /usr/local/bin/
# Mount points owned by the sidecars' user, so a new named volume starts
# writable by them (Docker copies the ownership into an empty volume).
COPY --chown=10001:10001 dirs/ /
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/sidecar"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/sidecar", "healthcheck"]

FROM ${RUST_IMAGE} AS build
ARG SIDECAR
WORKDIR /src
COPY workspace/ /src/
RUN cargo build --release --locked --bin "${SIDECAR}" \
 && mkdir -p /out \
 && strip --strip-debug -o "/out/${SIDECAR}" "target/release/${SIDECAR}" \
 && ln -s "${SIDECAR}" /out/sidecar

FROM ${BASE} AS production
COPY --from=build /out/ /usr/local/bin/
COPY --chown=10001:10001 dirs/ /
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/sidecar"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/sidecar", "healthcheck"]
