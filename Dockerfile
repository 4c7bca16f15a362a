# preview-gateway container image.
#
#   docker build -t preview-gateway .                      # on python:3.12-slim
#   buildah build --format docker --build-arg BASE=localhost/debian-python:bookworm -t pgw .
#
# BASE must provide python3 (3.11-3.13) with venv support and `useradd`; both stages use it, so
# the venv's interpreter symlinks are valid in the runtime stage. CI builds on a debootstrapped
# Debian image (ci/container-smoke.sh); see docs/operations.md.
# No `# syntax=` line on purpose: BuildKit would try to pull that frontend from Docker Hub.
ARG BASE=python:3.12-slim

# ── builder: a venv holding the dependencies, then the project ──────────────────────────────
FROM ${BASE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# Dependencies first, from pyproject.toml alone: this layer is reused until pyproject.toml
# changes, so a code change does not download anything. setuptools is the build backend; it is
# installed here so the project install below needs no network (--no-build-isolation).
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['project']['dependencies'] + p['build-system']['requires']))" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY README.md ./
COPY gateway/ gateway/
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
 && /opt/venv/bin/pip uninstall -y -q setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/python -m gateway --version

# ── runtime ─────────────────────────────────────────────────────────────────────────────────
FROM ${BASE}
LABEL org.opencontainers.image.title="preview-gateway" \
      org.opencontainers.image.description="Gives every port of a sandbox its own preview URL" \
      org.opencontainers.image.licenses="Apache-2.0"
# Fixed numeric uid/gid, so Kubernetes `runAsNonRoot` can verify it without /etc/passwd.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_BIND=0.0.0.0 \
    GATEWAY_EDGE_PORT=8080 \
    GATEWAY_API_PORT=8081 \
    GATEWAY_SHUTDOWN_GRACE_S=10 \
    GATEWAY_LOG_LEVEL=info \
    GATEWAY_WORKERS=1
# GATEWAY_WORKERS: gateway processes in this container, sharing its ports (SO_REUSEPORT), each
# using up to one core; `auto` = the CPUs the container may use. Above 1, PID 1 is a supervisor
# that restarts dead workers and forwards SIGTERM/SIGHUP to all; it needs GATEWAY_REDIS_URL.
# Scale across machines with more containers (replicas) on the same Redis instead or as well
# (docs/operations.md, "Sizing").
# Not /tmp: `python -m` puts the working directory first on sys.path, so it must not be writable.
WORKDIR /app
USER 10001:10001
# 8080: edge (preview traffic); 8081: control API, /healthz, /readyz.
EXPOSE 8080 8081
# Liveness only (/healthz): readiness (/readyz) belongs to the load balancer, not to restarts.
# Python's urllib, as the image has no curl. Assumes the API listens on loopback too (the
# default GATEWAY_BIND=0.0.0.0 does).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_API_PORT', '8081'), timeout=2)"]
# The gateway drains on SIGTERM (readiness 503, WebSockets closed 1001, in-flight requests get
# GATEWAY_SHUTDOWN_GRACE_S) and exits 0. Give `docker stop -t` more than that grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "gateway"]
