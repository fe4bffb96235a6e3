# syntax=docker/dockerfile:1
# Switchyard image: a static (musl) release build of the `switchyard` binary on distroless/static,
# running as a non-root user, no shell. Build with `make image` (docker or podman).
#
#   docker build -t switchyard:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 -v $PWD/deploy/local:/config:ro switchyard:dev serve --config /config

# --- Build -----------------------------------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS build
# musl-tools: the C compiler that `ring` (rustls' crypto) and jemalloc (the allocator, built from
# source by tikv-jemalloc-sys) need for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# rust-toolchain.toml pins the compiler; add the static target for the host architecture.
COPY rust-toolchain.toml ./
RUN target="$(uname -m)-unknown-linux-musl" \
 && rustup show active-toolchain \
 && rustup target add "$target" \
 && echo "$target" > /target-triple
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /target-triple)" \
 && cargo build --release --locked -p switchyard --target "$target" \
 && install -D -m 0755 -s "target/$target/release/switchyard" /out/switchyard

# --- Run -------------------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/switchyard /usr/local/bin/switchyard
# distroless `nonroot` (65532); numeric so Kubernetes can verify runAsNonRoot.
USER 65532:65532
# API listener (OpenAI / Anthropic compatible) and admin listener (/metrics, /healthz, /readyz).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve", "--kube"]
