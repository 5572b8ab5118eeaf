# dragonfly-mle container image (README "Deployment").
# Build stage: the same Debian packages and the same cargo command as .ci/run on the host
# (.ci/check-packaging compares them). Runtime stage: the binary, the scripts as the default
# root, a managed redis-server, following Suricata's eve.json mounted at /var/log/suricata.
#
#   docker build -t dragonfly-mle .
#   docker run -d --name dragonfly-mle -v /var/log/suricata:/var/log/suricata:ro \
#       -v dfm-logs:/var/log/dragonfly-mle -p 7070:7070 dragonfly-mle

# Rust on Debian bookworm, the host's distribution and toolchain version.
FROM rust:1.95.0-bookworm AS build

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Not version-pinned (DL3008): Debian's archive serves only the newest version of each package
# of a suite, so a pinned version stops installing at its next (security) update; the base
# image tags pin the release. The rust image (buildpack-deps) already has gcc and make:
# installing them again keeps the list equal to .ci/run's. mlua builds its vendored LuaJIT
# with them, rdkafka-sys librdkafka with its configure script (no cmake-build feature), and
# libz-sys links the system zlib when pkg-config finds it, else builds its bundled copy.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# benches/ too: Cargo.toml names bench targets, which cargo wants to find.
COPY benches/ benches/
COPY src/ src/
RUN cargo build --release --locked

# The binary needs libz.so.1 and libgcc_s.so.1 beside glibc (ldd), which bookworm-slim has.
FROM debian:12.11-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# redis-server: the engine runs its own (managed Redis: config.lua names no Redis) on a unix
# socket under its run directory. The engine starts as root, opens its inputs and outputs,
# then drops to the system user dragonfly (--user), which owns the log and run directories.
# Not version-pinned (DL3008): see the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin dragonfly \
    && install -d -o dragonfly -g dragonfly -m 0755 /var/log/dragonfly-mle /var/run/dragonfly-mle

COPY --from=build /src/target/release/dragonfly-mle /usr/local/bin/dragonfly-mle
COPY scripts/ /usr/local/dragonfly-mle/

# Results (annotated.json), dragonfly-mle.log and dragonfly-mle-stats.log.
VOLUME ["/var/log/dragonfly-mle"]

# Metrics and health (--http).
EXPOSE 7070

# bash's /dev/tcp: no HTTP client in the image. Healthy when /health answers 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7070 && printf 'GET /health HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]

# SIGTERM stops reading, drains in-flight events and flushes the outputs (give it time:
# docker stop -t 30); SIGHUP reloads the scripts; SIGUSR1 rotates the file outputs.
STOPSIGNAL SIGTERM

# Arguments after the image name replace CMD (e.g. `check` validates the configuration).
ENTRYPOINT ["/usr/local/bin/dragonfly-mle", "-r", "/usr/local/dragonfly-mle", "-l", "/var/log/dragonfly-mle", "--config", "/usr/local/dragonfly-mle/config/docker.lua"]
CMD ["--user", "dragonfly", "--http", "0.0.0.0:7070"]
