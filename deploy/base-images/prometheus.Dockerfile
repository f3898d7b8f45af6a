# LOCAL STAND-IN for prom/prometheus (see build.sh): Debian bookworm's prometheus package (2.42),
# laid out like the official image (binary /bin/prometheus, user nobody, data in /prometheus, and
# a wget for the health check, as the official image has busybox wget).
# hadolint ignore=DL3006
FROM debian:bookworm-slim
LABEL org.opencontainers.image.description="LOCAL STAND-IN for prom/prometheus, built from Debian's prometheus package"
# hadolint ignore=DL3008
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -f /usr/sbin/policy-rc.d \
 && test -x /bin/prometheus \
 && mkdir -p /prometheus /etc/prometheus \
 && chown nobody:nogroup /prometheus \
 && rm -rf /var/lib/apt/lists/*
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
