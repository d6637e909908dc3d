# syntax=docker/dockerfile:1
# The promoter: a long-running container that promotes due jobs, reaps expired leases, repairs Redis
# from Postgres and (with JOBQ_WORKER_CONCURRENCY > 0) runs jobs. Migrations are compiled into the
# binary and applied at start.
#
#   docker build -t jobq-promoter .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... jobq-promoter

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out of the
# cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p jobq-promoter --locked \
 && install -D -m 0755 target/release/jobq-promoter /out/jobq-promoter

FROM debian:bookworm-slim AS runtime
# Debian's security updates replace exact versions, so ca-certificates is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 jobq \
 && useradd --system --uid 10001 --gid jobq --no-create-home --shell /usr/sbin/nologin jobq
COPY --from=builder /out/jobq-promoter /usr/local/bin/jobq-promoter
# CA certificates for TLS to RDS (PGSSLROOTCERT): certs/rds-global-bundle.pem, see README.md.
COPY certs/ /opt/jobq/certs/
USER 10001:10001
ENV RUST_LOG=info \
    JOBQ_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/jobq-promoter"]
