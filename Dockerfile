# pilotfish container image: built on Debian 12, run on Debian 12 slim with only the shared
# libraries pilotfish links against, as a non-root user, with the binary as entrypoint.
#
# This file is NOT built by `make test`: the machines pilotfish is developed and tested on
# have no container engine. test/integration/test_packaging.py keeps it true instead: the
# build stage must install exactly the Debian packages the Makefile builds with and run the
# Makefile's own target, and the runtime stage must install exactly the runtime packages of
# the Makefile's LIBS (every library build/pilotfish needs is among them).
#
#   docker build -t pilotfish:0.1.0 .
#   docker run --rm pilotfish:0.1.0 --version
#   docker run --rm -v "$PWD/examples:/etc/pilotfish:ro" pilotfish:0.1.0 \
#       --check-config /etc/pilotfish/pilotfish.json

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc make pkg-config libevent-dev libc-ares-dev libcurl4-openssl-dev libjansson-dev \
      libyaml-dev libssl-dev node-llhttp \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" build/pilotfish

FROM debian:12-slim
LABEL org.opencontainers.image.title="pilotfish" \
      org.opencontainers.image.description="A small HTTP/1.1 sidecar proxy" \
      org.opencontainers.image.version="0.1.0"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libevent-core-2.1-7 libevent-extra-2.1-7 libevent-pthreads-2.1-7 libc-ares2 \
      libcurl4 libjansson4 libyaml-0-2 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 pilotfish \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pilotfish
COPY --from=build /src/build/pilotfish /usr/local/bin/pilotfish
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# The listener and the admin server of the chart's and manifests' config.
EXPOSE 15001 9901
ENTRYPOINT ["/usr/local/bin/pilotfish"]
CMD ["--config", "/etc/pilotfish/pilotfish.json"]
