# PostgreSQL 15 with pgvector, started by repl-manager's hold-file supervisor
# (supervision = "external": repl-manager, in its own container on the same
# volume, decides when the server may run). Production uses the pgvector
# project's image of the same major version; the `test` stage is the same
# server from Debian's packages with pgvector built from Debian's source.
ARG BASE=pgvector/pgvector:0.8.0-pg15-bookworm

FROM ${BASE} AS test
ADD pgvector.tar /
COPY postgres-supervisor.sh /usr/local/bin/postgres-supervisor
RUN mkdir -p /var/lib/postgresql/data /var/run/postgresql /var/lib/aurora/repl-manager \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql /var/lib/aurora/repl-manager \
 && chmod 0700 /var/lib/postgresql/data
# The supervisor's hold file defaults to aurora.hold beside PGDATA. No
# AURORA_* variable here: repl-manager's image is built on this one, and it
# refuses AURORA_* variables that are not its config keys.
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data/pgdata
USER postgres
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/postgres-supervisor"]

FROM ${BASE} AS production
COPY postgres-supervisor.sh /usr/local/bin/postgres-supervisor
RUN mkdir -p /var/lib/postgresql/data /var/run/postgresql /var/lib/aurora/repl-manager \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql /var/lib/aurora/repl-manager \
 && chmod 0700 /var/lib/postgresql/data
ENV PGDATA=/var/lib/postgresql/data/pgdata
USER postgres
ENTRYPOINT ["/usr/local/bin/postgres-supervisor"]
