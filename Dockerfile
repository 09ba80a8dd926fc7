# Harrier in a container: a multi-stage build (the toolchain image builds, a slim image runs) and a non-root user.
#   docker build -t harrier .
#   docker run --rm -p 8125:8125/udp harrier
# The configuration is /etc/harrier/harrier.yaml (config.example.yaml by default: mount your own over it), and
# every key can be set with HARRIER_<KEY> environment variables.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin harrier

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin harrier
COPY --from=build /src/target/release/harrier /usr/local/bin/harrier
COPY config.example.yaml /etc/harrier/harrier.yaml
USER 10001
# Inside a container, listen on every interface (the example config listens on 127.0.0.1 only).
ENV HARRIER_STATSD_LISTEN_ADDRESSES=udp://0.0.0.0:8125
EXPOSE 8125/udp
ENTRYPOINT ["/usr/local/bin/harrier"]
CMD ["--config", "/etc/harrier/harrier.yaml"]
