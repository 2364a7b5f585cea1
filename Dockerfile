# One image for the api, the worker, the operator and `conveyor init`; the chart picks the
# command. Build: docker build -t conveyor .   (or `make image`)
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: install Conveyor and its dependencies into a self-contained venv ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/conveyor
WORKDIR /src
# Dependencies first, from the metadata alone, so code edits reuse this layer. The extras
# are what the image runs: the api, the worker with its handlers, the operator; not `local`.
COPY pyproject.toml README.md ./
RUN mkdir conveyor api worker \
 && /opt/conveyor/bin/pip install --no-compile ".[server,operator,handlers]" \
 && /opt/conveyor/bin/pip uninstall -y conveyor
COPY conveyor conveyor
COPY api api
COPY worker worker
# pip and setuptools are only needed to install: the final image runs without them.
RUN /opt/conveyor/bin/pip install --no-deps --no-compile . \
 && /opt/conveyor/bin/python -m compileall -q /opt/conveyor/lib \
 && /opt/conveyor/bin/pip uninstall -y pip setuptools

# --- runtime: the interpreter, the venv and the operator script; no compiler, no pip -----
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="conveyor" \
      org.opencontainers.image.description="Conveyor task queue: api, worker and TaskType operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's own pip is an installer too; nothing at run time needs it.
RUN python -m pip uninstall -y pip setuptools wheel \
 && groupadd --system --gid 10001 conveyor \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin conveyor
COPY --from=build /opt/conveyor /opt/conveyor
COPY k8s/controller /app/k8s/controller
COPY k8s/examples /app/k8s/examples
ENV PATH=/opt/conveyor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVEYOR_API_HOST=0.0.0.0 \
    CONVEYOR_TASKTYPES=/etc/conveyor/tasktypes
WORKDIR /app
# Numeric, so Kubernetes can verify runAsNonRoot without resolving the name.
USER 10001:10001
EXPOSE 8000 9100 8080
CMD ["conveyor", "api"]
