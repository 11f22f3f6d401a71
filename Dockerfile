# Quorum milter image. Build context: the repository root (see .dockerignore).
# Debian's python3 + a venv in /opt/quorum with `pip install .` of this repository.
#
# Stage 1: build the venv (dependencies first, keyed on pyproject.toml, then the package).
FROM debian:bookworm AS build
# >>> shared layer: byte-identical in every Dockerfile of the stack, so the build cache
# >>> runs apt once for all images (compose/test-stack.sh checks this)
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl netcat-openbsd procps tini \
      clamav-daemon clamdscan \
      postfix \
      python3 python3-venv python3-dev gcc libc6-dev libmilter-dev \
      redis-server redis-tools \
      rspamd \
      spamassassin spamc spamd \
 && rm -rf /var/lib/apt/lists/*
# <<< end of shared layer

# Optional: a PyPI mirror and extra CAs (compose/build-ca/*.crt) for pip; build stage only.
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY compose/build-ca/ /tmp/build-ca/
RUN cat /etc/ssl/certs/ca-certificates.crt /tmp/build-ca/*.crt > /tmp/pip-ca.pem 2>/dev/null || true; \
    python3 -m venv /opt/quorum
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb")); \
print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' > /tmp/requirements.txt \
 && PIP_CERT=/tmp/pip-ca.pem /opt/quorum/bin/pip install --no-cache-dir --disable-pip-version-check \
      --index-url "$PIP_INDEX_URL" -r /tmp/requirements.txt
COPY README.md /src/README.md
COPY milter/ /src/milter/
RUN /opt/quorum/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation /src \
 && /opt/quorum/bin/pip check \
 && /opt/quorum/bin/python -c "import quorum"

# Stage 2: the runtime image (same shared layer, so nothing new is downloaded).
FROM debian:bookworm
# >>> shared layer: byte-identical in every Dockerfile of the stack, so the build cache
# >>> runs apt once for all images (compose/test-stack.sh checks this)
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl netcat-openbsd procps tini \
      clamav-daemon clamdscan \
      postfix \
      python3 python3-venv python3-dev gcc libc6-dev libmilter-dev \
      redis-server redis-tools \
      rspamd \
      spamassassin spamc spamd \
 && rm -rf /var/lib/apt/lists/*
# <<< end of shared layer

COPY --from=build /opt/quorum /opt/quorum
COPY compose/quorum.toml /etc/quorum/quorum.toml
# gid 6380: the group of the Redis secrets (password, HMAC key) the redis container makes, 0640
# (engines/redis/entrypoint.sh); as the primary group it holds without relying on group_add.
RUN groupadd --system --gid 6380 quorum \
 && useradd --system --gid 6380 --home-dir /var/lib/quorum --create-home --shell /usr/sbin/nologin quorum \
 && ln -s /opt/quorum/bin/quorum /usr/local/bin/quorum
ENV PATH=/opt/quorum/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
# Quorum never runs as root here: it starts as `quorum` (so [milter] user stays unset, see
# quorum/service/privileges.py); compose/test-stack.sh checks `ps -o user=` in the container.
USER quorum
WORKDIR /var/lib/quorum
EXPOSE 9900
ENTRYPOINT ["/usr/bin/tini", "--", "quorum"]
CMD ["run", "-c", "/etc/quorum/quorum.toml"]
