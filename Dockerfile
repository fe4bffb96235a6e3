# syntax=docker/dockerfile:1
# Switchyard image: a static (musl) release build of the `switchyard` binary on distroless/static,
# running as a non-root user, no shell. The build is profile-guided (bench/pgo.py: an
# instrumented build runs the bench's workloads in front of the mock, then the optimised build);
# it takes about three times a plain release build. Build with `make image` (docker or podman).
#
#   docker build -t switchyard:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 -v $PWD/deploy/local:/config:ro switchyard:dev serve --config /config

# --- Build -----------------------------------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS build
# musl-tools: the C compiler that `ring` (rustls' crypto) and jemalloc (the allocator, built from
# source by tikv-jemalloc-sys) need for the musl target. python3 runs bench/pgo.py.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools python3 \
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
 && python3 bench/pgo.py --target "$target" --install /out/switchyard \
 && strip /out/switchyard

# --- Run -------------------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/switchyard /usr/local/bin/switchyard
# distroless `nonroot` (65532); numeric so Kubernetes can verify runAsNonRoot.
USER 65532:65532
# API listener (OpenAI / Anthropic compatible) and admin listener (/metrics, /healthz, /readyz).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve", "--kube"]
