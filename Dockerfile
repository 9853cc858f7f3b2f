# repoman in a container: `repoman serve` as PID 1, as a non-root user, models at /mnt/models.
#
#   docker build -t repoman:0.1.0 .                         # every backend (EXTRAS=all)
#   docker build --build-arg EXTRAS= -t repoman:0.1.0-onnx .   # the core: ONNX Runtime only
#   docker run --rm -p 8000:8000 -v "$PWD/model_repository:/mnt/models:ro" repoman:0.1.0
#
# Ports: 8000 HTTP (KServe v2, and Prometheus metrics at /metrics); 8001 gRPC (KServe v2).
# KServe runs it on 8080 through the ServingRuntime's args (deploy/kserve/). docs/deploying.md
# says more.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the wheel, then a virtualenv with it and the chosen extras -----------------------
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=all
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY repoman repoman
COPY plugins plugins
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --quiet build \
 && /opt/build/bin/python -m build --wheel --outdir /dist . \
 && python3 -m venv /opt/repoman \
 && wheel="$(ls /dist/repoman-*.whl)" \
 && /opt/repoman/bin/pip install --quiet "${wheel}${EXTRAS:+[$EXTRAS]}" \
 && /opt/repoman/bin/repoman --version

# ---- run: the virtualenv alone, on a clean base --------------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 1000 repoman \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin repoman \
 && mkdir -p /mnt/models
COPY --from=build /opt/repoman /opt/repoman
ENV PATH=/opt/repoman/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /tmp
EXPOSE 8000 8001
# Kubernetes' default grace period is 30 s: each of the three stop phases (in-flight requests,
# draining the queues, unloading) waits at most --shutdown-timeout, so 8 s keeps all of them
# inside it. repoman handles SIGTERM itself (stop accepting, finish, unload, exit 0), so it
# runs as PID 1 with no init in front of it.
STOPSIGNAL SIGTERM
# Ready = the first pass over the repository is done (Kubernetes uses the ServingRuntime's
# probes instead; this is for docker/podman). The port is the CMD's: change both together.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["repoman"]
CMD ["serve", "--model-repository", "/mnt/models", "--host", "0.0.0.0", "--http-port", "8000", \
     "--shutdown-timeout", "8"]
