# One image for every service of docker-compose.yml: the ledgermesh binary,
# anvil (for the chain service), the sample configs and an entrypoint that
# wires the services together through a shared volume.
#
#   docker compose up --build
#
# Validated here with `docker-compose config` and the binary's own config
# check (see tests/tests/operate.rs); no Docker engine runs on the machines
# this project is built on.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ledgermesh \
    && strip target/release/ledgermesh

# anvil, at the version the test suite pins (scripts/tools-package.json).
FROM ghcr.io/foundry-rs/foundry:v1.7.1 AS foundry

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates jq \
    && rm -rf /var/lib/apt/lists/*
COPY --from=foundry /usr/local/bin/anvil /usr/local/bin/anvil
COPY --from=build /src/target/release/ledgermesh /usr/local/bin/ledgermesh
COPY config/ /etc/ledgermesh/
COPY docker/entrypoint.sh /usr/local/bin/ledgermesh-entrypoint
ENV LEDGERMESH_ANVIL=/usr/local/bin/anvil
VOLUME /shared
ENTRYPOINT ["ledgermesh-entrypoint"]
CMD ["--help"]
