# pilotfish container image: built on Debian 12; run from an image that holds only the
# binary, the shared libraries it loads, `sleep` (the chart's preStop hook) and the users:
# no shell, no package manager, a non-root numeric user, the binary as entrypoint.
#
# `make image` builds it with docker, podman or buildah (packaging/image.sh), and
# test/integration/test_image.py builds and runs it in `make test`. test_packaging.py keeps
# the package lists true: the build stage installs exactly the Debian packages the Makefile
# builds with and runs the Makefile's own target; the runtime stage installs exactly the
# runtime packages of the Makefile's LIBS and DLOPEN_LIBS.
#
#   make image
#   docker run --rm pilotfish:0.1.0 --version
#   docker run --rm -v "$PWD/examples:/etc/pilotfish:ro" pilotfish:0.1.0 \
#       --check-config /etc/pilotfish/pilotfish.json

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev make pkg-config libevent-dev libc-ares-dev libcurl4-openssl-dev \
      libjansson-dev libyaml-dev libpcre2-dev libssl-dev libnghttp2-dev node-llhttp \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" build/pilotfish

# The runtime packages, installed here only to take the files pilotfish loads from them.
FROM debian:12 AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libevent-core-2.1-7 libevent-extra-2.1-7 libevent-pthreads-2.1-7 libc-ares2 \
      libcurl4 libjansson4 libyaml-0-2 libpcre2-8-0 libssl3 libnghttp2-14 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/pilotfish /usr/local/bin/pilotfish
COPY packaging/rootfs.sh /tmp/rootfs.sh
# libcurl is loaded with dlopen on first use (discovery/curl_loader.c), so ldd does not name it.
RUN sh /tmp/rootfs.sh /rootfs /usr/local/bin/pilotfish /usr/bin/sleep -- libcurl.so.4

FROM scratch
LABEL org.opencontainers.image.title="pilotfish" \
      org.opencontainers.image.description="A small HTTP/1.1, HTTP/2 and TLS sidecar proxy" \
      org.opencontainers.image.version="0.1.0"
COPY --from=runtime /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# The listener and the admin server of the chart's and manifests' config.
EXPOSE 15001 9901
ENTRYPOINT ["/usr/local/bin/pilotfish"]
CMD ["--config", "/etc/pilotfish/pilotfish.json"]
