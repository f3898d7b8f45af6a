# LOCAL STAND-IN for python:3.11-slim-bookworm (see build.sh): Debian bookworm's own Python 3.11.
# host-ca-bundle.crt is the CI host's CA bundle (build.sh copies it into the build context): CI's
# outbound HTTPS goes through a TLS-inspecting proxy, so pip inside `docker build` must trust the same
# CAs as the host. The official image does not need (or have) this.
# hadolint ignore=DL3006
FROM debian:bookworm-slim
LABEL org.opencontainers.image.description="LOCAL STAND-IN for python:3.11-slim-bookworm, built from Debian packages"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && rm -rf /var/lib/apt/lists/*
COPY host-ca-bundle.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
