# Multi-stage image with the three workspace binaries: pipeline, generator, simulator.
# Used by docker-compose.yml (services `generator` and `pipeline`).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# rdkafka builds its bundled librdkafka with the compiler and make already in this image.
COPY . .
RUN cargo build --release -p pipeline -p generator -p simulator --features pipeline/services,generator/kafka,generator/postgres

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --uid 10001 smartcity \
    && mkdir -p /data/checkpoint \
    && chown -R smartcity:smartcity /data
COPY --from=builder /src/target/release/pipeline /src/target/release/generator /src/target/release/simulator /usr/local/bin/
USER smartcity
WORKDIR /data
# At most two glibc malloc arenas: by default each thread that allocates (tokio's workers,
# librdkafka's) gets its own and keeps what is freed in it; under the 20,000-key flood of
# tests/services/faults.rs that held ~10 MB more resident (72 MB against 62 MB peak).
ENV MALLOC_ARENA_MAX=2
CMD ["pipeline", "--help"]
