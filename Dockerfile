# Quiver server image: the `quiver` command on a slim Python, running as a non-root user.
#
#   docker build -t quiver .
#   docker run -p 50051:50051 -e QUIVER_TOKENS=... -v quiver-data:/data quiver \
#       serve --host 0.0.0.0 --root /data --token-env QUIVER_TOKENS
#
# The default command listens on 0.0.0.0 without credentials, which the server refuses;
# give credentials as above, or use compose/docker-compose.yml (MinIO + quiver with tokens).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The build stage installs the project into a virtualenv; the runtime stage copies only
# that virtualenv, so the source tree and pip's caches stay out of the final image.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/quiver
WORKDIR /src
# Metadata first: a change to the code alone does not invalidate the layers above.
COPY pyproject.toml setup.py README.md ./
COPY superfile ./superfile
COPY supertable ./supertable
COPY catalog ./catalog
COPY flight_server ./flight_server
COPY proto ./proto
COPY quiver ./quiver
# The search kernels are compiled here, once, into NUMBA_CACHE_DIR: a container's first
# query loads them instead of compiling for seconds. The folder stays writable by the
# server's user (numba only uses a cache folder it can write).
ENV NUMBA_CACHE_DIR=/opt/quiver/kernel-cache
# The image installs the same wheel users install. The import check fails the build here,
# not at first start, when a native wheel is missing.
RUN /opt/quiver/bin/pip wheel --no-deps --wheel-dir /tmp/dist . \
    && /opt/quiver/bin/pip install /tmp/dist/quiver-*.whl \
    && /opt/quiver/bin/python -c "import quiver.flight_server.service.serve, quiver.flight_server.cli.health" \
    && /opt/quiver/bin/quiver serve --help > /dev/null \
    && /opt/quiver/bin/python -m quiver.flight_server.sql.warmup

FROM ${PYTHON_IMAGE}
# A fixed uid/gid lets a host directory mounted at /data be given to the same user.
RUN groupadd --system --gid 10001 quiver \
    && useradd --system --uid 10001 --gid quiver --home-dir /home/quiver --create-home \
        --shell /usr/sbin/nologin quiver \
    && mkdir -p /data /var/cache/quiver \
    && chown quiver:quiver /data /var/cache/quiver \
    && chmod 0700 /var/cache/quiver
COPY --from=build /opt/quiver /opt/quiver
RUN chown -R quiver:quiver /opt/quiver/kernel-cache
# QUIVER_CACHE_DIR: the superfile cache for object-storage roots. It must be private to
# the server's user (the server refuses a shared one), hence its own 0700 directory.
ENV PATH=/opt/quiver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QUIVER_CACHE_DIR=/var/cache/quiver \
    NUMBA_CACHE_DIR=/opt/quiver/kernel-cache
USER quiver:quiver
WORKDIR /home/quiver
VOLUME ["/data"]
EXPOSE 50051
ENTRYPOINT ["quiver"]
CMD ["serve", "--host", "0.0.0.0", "--root", "/data"]
