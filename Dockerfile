# One image for the operator (`hookline controller`) and its workers (`hookline worker`):
# a static musl binary on distroless/static, running as the distroless nonroot user (65532),
# which is what the operator's Deployments and the worker pods' security contexts expect.
#
#   docker build -t ghcr.io/hookline/hookline:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/hookline/hookline:0.1.0 .

# Built natively per platform (buildx runs arm64 under emulation), so musl-gcc is the host's.
FROM rust:1.95-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# The image needs no debug info (the development profile keeps some for benchmarks).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=true
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/bench.rs \
 && echo 'fn main() {}' > benches/controller.rs \
 && echo 'fn main() {}' > benches/transform.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin hookline \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin hookline \
 && cp "target/$(cat /rust-target)/release/hookline" /hookline

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="hookline" \
      org.opencontainers.image.description="Kubernetes-native Extensible Webhooks destination" \
      org.opencontainers.image.source="https://github.com/hookline/hookline" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /hookline /hookline
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/hookline"]
CMD ["controller"]
