# One image for all five services. The service is chosen by the arguments:
#
#   docker build -t im-suite:dev .
#   docker run --rm im-suite:dev serve connector     # imctl serve <gateway|user|group|connector|router>
#   docker run --rm im-suite:dev db upgrade          # the once-per-release schema migration
#
# Configuration comes from IM_* environment variables (`imctl config-doc` lists them);
# deploy/k8s/ shows how Kubernetes wires them. See deploy/README.md.

# Pinned (patch + Debian release); bump deliberately, both stages use the same one so
# the virtualenv's interpreter symlinks stay valid.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# The runtime dependencies first, every one (transitive ones included) from the lock at
# its hash, so this layer is rebuilt only when the lock changes. No dev or test extras.
COPY requirements/runtime.lock ./requirements/
RUN pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml ./

COPY README.md ./
COPY protos ./protos
COPY im ./im
COPY services ./services
# The JavaScript SDK the gateway's web page imports: services/gateway/web/sdk links
# here, and the install below copies the files themselves into the package.
COPY clients/js/src ./clients/js/src

# im/v1/*_pb2*.py are generated from protos/ (never committed), then the project is
# installed (not editable) into the venv with them; the import check runs outside /src
# so it proves the installed copy is complete.
RUN python -m im.protogen \
    && pip install --no-deps . \
    && cd / \
    && python -c "import im.v1.wire_pb2, im.v1.user_pb2_grpc, services.gateway.app, services.connector.app, services.router.app" \
    && imctl --help > /dev/null

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="im-suite" \
      org.opencontainers.image.description="IM backend: gateway, user, group, connector and router services" \
      org.opencontainers.image.licenses="Apache-2.0"

# Non-root, numeric so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 im \
    && useradd --system --uid 10001 --gid im --home-dir /home/im --create-home \
       --shell /usr/sbin/nologin im

# The venv holds the installed project (its source and the generated im/v1 modules,
# byte-compiled at install): nothing else from the build is needed.
COPY --from=builder /opt/venv /opt/venv

# IM_HOST, IM_INTERNAL_HOST: listen on every interface in a container (internal gRPC
# still requires the suite's certificate, docs/security.md). IM_DATA_DIR: under /tmp, the only
# writable place when the root filesystem is read-only (Kubernetes mounts an emptyDir).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    IM_HOST=0.0.0.0 \
    IM_INTERNAL_HOST=0.0.0.0 \
    IM_DATA_DIR=/tmp/im-data

WORKDIR /home/im
USER 10001:10001

# gateway http, user/group/connector/router gRPC, gateway MessageService and admin
# gRPC, connector client TCP and WebSocket, gateway metrics (internal)
EXPOSE 8080 50050 50051 50052 50053 50060 50070 7070 7071 9464

# imctl is PID 1 and handles SIGTERM itself (graceful stop; connectors drain).
ENTRYPOINT ["imctl"]
CMD ["serve", "gateway"]
