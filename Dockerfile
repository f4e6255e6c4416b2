# crumb-proxy container image.
#
#   docker build -t crumb-proxy .
#   docker run --rm --network host \
#     -v "$PWD/crumb-proxy.toml:/etc/crumb-proxy/config.toml:ro" \
#     -v "$PWD/jenkins-password:/run/secrets/jenkins-password:ro" \
#     crumb-proxy
#
# Needs BuildKit (the default builder since Docker 23; `DOCKER_BUILDKIT=1`
# with Docker 20.10), for the cache mounts and so that only the stages the
# final image needs are built.
#
# Build arguments (every base image is one, so a mirror or a digest-pinned
# reference can be passed in):
#   BUILDER_IMAGE   Rust toolchain image of the compile stage. Its Debian
#                   release must match the runtime image's (glibc).
#   RUNTIME_IMAGE   Base of the final image: glibc, libgcc_s, a CA bundle at
#                   /etc/ssl/certs/ca-certificates.crt and a passwd entry for
#                   UID 65532. distroless/cc's `nonroot` variant is exactly
#                   that, without a shell or package manager. Pin it by digest
#                   (`…@sha256:…`) in production.
#   BINARY_SOURCE   `builder` (default) compiles from source with the
#                   committed Cargo.lock; `prebuilt` instead copies an
#                   already built binary from PREBUILT_BINARY in the build
#                   context (built for the same glibc), and the compile stage
#                   is skipped entirely (tests/docker/run.sh uses this).
#
# At run time the image expects, mounted read-only:
#   /etc/crumb-proxy/config.toml   the config (see config/crumb-proxy.example.toml)
#   /run/secrets/…                 the secret file the config names, e.g.
#                                  password_file = "/run/secrets/jenkins-password";
#                                  readable by UID 65532, ideally mode 0400
# It writes nothing, so it runs with a read-only root filesystem
# (`--read-only`), no capabilities (`--cap-drop ALL`) and
# `--security-opt no-new-privileges`.
#
# Ports: 8181 proxy (`listen.address`), 8182 health (`health.address`). Both
# default to 127.0.0.1: share the proxy's network namespace with the tool
# (`--network container:…`, Compose `network_mode: "service:…"`, a Kubernetes
# pod) rather than publishing them; see the README, "Deployment".

ARG BUILDER_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_SOURCE=builder

# --- compile stage ----------------------------------------------------------
FROM ${BUILDER_IMAGE} AS builder
WORKDIR /build
# Only what `cargo build --bin` reads: the manifest, the lock file and the
# sources (tests and examples are not needed to build the binary).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# --locked: build exactly the dependency versions of the committed Cargo.lock
# and fail if it is out of date, rather than resolving new ones.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin crumb-proxy \
    && install -D -m 0755 target/release/crumb-proxy /out/crumb-proxy

# --- or: a binary built outside Docker ---------------------------------------
FROM scratch AS prebuilt
ARG PREBUILT_BINARY=target/release/crumb-proxy
COPY ${PREBUILT_BINARY} /out/crumb-proxy

# Whichever of the two BINARY_SOURCE names; BuildKit builds only that one.
FROM ${BINARY_SOURCE} AS binary

# --- runtime ----------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=binary /out/crumb-proxy /usr/local/bin/crumb-proxy
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd
# lookup; 65532 is distroless' `nonroot`. Owns nothing in the image.
USER 65532:65532
EXPOSE 8181 8182
# `crumb-proxy health` asks http://127.0.0.1:8182/readyz and exits 0 only on
# 200: the image has no shell and no curl. It shares the container's network
# namespace, so it reaches the loopback-only health listener.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/crumb-proxy", "health"]
# SIGTERM (docker stop) turns readiness to 503, drains in-flight requests for
# up to shutdown.drain_secs and exits 0; give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/crumb-proxy"]
CMD ["--config", "/etc/crumb-proxy/config.toml"]
