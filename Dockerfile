# spillway in a FROM scratch image: one static binary, a non-root user, the
# queue directory as a volume. Build from the source tree:
#
#   docker build -t spillway .                (or: podman build --format docker -t spillway .)
#
# or, offline, around a binary scripts/package.sh already built:
#
#   cp /etc/ssl/certs/ca-certificates.crt target/package/
#   podman build --format docker --build-arg SOURCE=prebuilt \
#     --build-arg BINARY=target/package/spillway-0.1.0-x86_64-linux-static -t spillway .
#
# Run with a config mounted at /etc/spillway (storage.path: /var/lib/spillway):
#
#   docker run -v ./conf:/etc/spillway:ro -v spillway-data:/var/lib/spillway -p 8880:8880 spillway
ARG SOURCE=build

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# No .git in the build context: pass the commit in (`--build-arg SPILLWAY_GIT_COMMIT=$(git rev-parse --short=12 HEAD)`).
ARG SPILLWAY_GIT_COMMIT=unknown
ARG SOURCE_DATE_EPOCH
# Static glibc: getrandom must call getrandom() directly (no dlsym, no /dev/urandom in scratch).
RUN RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin spillway \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/spillway /out/spillway \
 && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

FROM scratch AS prebuilt
ARG BINARY=target/package/spillway-x86_64-linux-static
ARG CA_BUNDLE=target/package/ca-certificates.crt
COPY ${BINARY} /out/spillway
COPY ${CA_BUNDLE} /out/ca-certificates.crt

FROM ${SOURCE} AS binary

FROM scratch
COPY --from=binary /out/spillway /spillway
# The HTTP client needs a trust store to start, even for plain-HTTP endpoints.
COPY --from=binary /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The queue directory, owned by the user the process runs as (scratch has no mkdir).
COPY --chown=65532:65532 packaging/container/data/ /var/lib/spillway/
USER 65532:65532
EXPOSE 8880
VOLUME ["/var/lib/spillway"]
# scratch has no curl: the binary probes its own /health (and reads SPILLWAY_HTTP_AUTH).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/spillway", "health", "--url", "http://127.0.0.1:8880"]
ENTRYPOINT ["/spillway"]
CMD ["run", "-c", "/etc/spillway/spillway.yml", "--http.listen", "0.0.0.0:8880"]
