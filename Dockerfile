# ringmq in a container: a multi-stage build (the Rust toolchain stays in
# the first stage), run as a non-root user with the data directory as a
# volume.
#
#   docker build -t ringmq .
#   docker run --rm -p 1883:1883 -v ringmq-data:/var/lib/ringmq \
#     --security-opt seccomp=unconfined ringmq --allow-anonymous true
#
# io_uring: Docker's default seccomp profile refuses io_uring_setup, so the
# container needs `--security-opt seccomp=unconfined` (or a profile that
# allows io_uring_setup, io_uring_enter and io_uring_register). On kernels
# before 5.12 the rings count against RLIMIT_MEMLOCK: add
# `--ulimit memlock=-1`.
#
# Settings come from /etc/ringmq/ringmq.toml (contrib/docker/: listen on 0.0.0.0:1883, data
# in the volume); flags after the image name win over it, and a --listen
# there replaces the file's. Mount your own file over it for more. The
# listener is 0.0.0.0, so anonymous clients are refused unless
# `--allow-anonymous true`; for a real deployment mount a password file
# and pass `--password-file /etc/ringmq/passwords`.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ringmq \
 && install -m 0755 target/release/ringmq /usr/local/bin/ringmq

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ringmq \
      --shell /usr/sbin/nologin ringmq \
 && mkdir -p /var/lib/ringmq /etc/ringmq \
 && chown ringmq:ringmq /var/lib/ringmq
COPY contrib/docker/ringmq.toml /etc/ringmq/ringmq.toml
COPY --from=build /usr/local/bin/ringmq /usr/local/bin/ringmq
USER ringmq
VOLUME ["/var/lib/ringmq"]
EXPOSE 1883 8883 9183
ENTRYPOINT ["/usr/local/bin/ringmq", "--config", "/etc/ringmq/ringmq.toml"]
