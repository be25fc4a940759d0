# repl-manager on top of the PostgreSQL image: it runs pg_basebackup,
# pg_rewind and initdb of exactly the server's version, as the same
# `postgres` user that owns the shared data volume.
ARG POSTGRES_IMAGE=aurora-node/postgres:0.1.0
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${POSTGRES_IMAGE} AS test
COPY bin/repl-manager.d/ /usr/local/bin/
USER postgres
ENTRYPOINT ["/usr/local/bin/repl-manager"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["/usr/local/bin/repl-manager", "healthcheck"]

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY workspace/ /src/
RUN cargo build --release --locked --bin repl-manager \
 && strip --strip-debug -o /repl-manager target/release/repl-manager

FROM ${POSTGRES_IMAGE} AS production
COPY --from=build /repl-manager /usr/local/bin/repl-manager
USER postgres
ENTRYPOINT ["/usr/local/bin/repl-manager"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["/usr/local/bin/repl-manager", "healthcheck"]
