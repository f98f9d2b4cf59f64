# One image for both roles: `dotcos-serve` (default) and `dotcos-build` (the batch job).
# Reproducible: every package comes from constraints.txt, the set the tests passed with (see docs/guides/containers.md).

FROM python:3.11.11-slim-bookworm AS wheels
# --build-arg DOTCOS_EXTRAS=ray adds Ray (sharded builds on a cluster, shards on Ray Serve).
ARG DOTCOS_EXTRAS=""
# Behind a TLS-intercepting proxy: --build-arg EXTRA_CA_CERTS="$(cat proxy-ca.pem)". Used by pip in
# this stage only; the published stage below never sees it.
ARG EXTRA_CA_CERTS=""
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY index_builder ./index_builder
COPY service ./service
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
      cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem && printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/ca.pem; \
      export PIP_CERT=/tmp/ca.pem; \
    fi \
 && pip wheel --no-cache-dir --only-binary :all: --constraint constraints.txt --wheel-dir /wheels \
      ".${DOTCOS_EXTRAS:+[$DOTCOS_EXTRAS]}" \
 && rm -f /tmp/ca.pem

FROM python:3.11.11-slim-bookworm AS runtime
ARG DOTCOS_EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DOTCOS_INDEX_ROOT=/indexes \
    DOTCOS_HOST=0.0.0.0 \
    DOTCOS_PORT=8000 \
    OMP_WAIT_POLICY=PASSIVE
RUN groupadd --gid 10001 dotcos \
 && useradd --uid 10001 --gid dotcos --home-dir /home/dotcos --create-home --shell /usr/sbin/nologin dotcos \
 && mkdir -p /indexes /data \
 && chown dotcos:dotcos /indexes
COPY --from=wheels /wheels /wheels
# Makes a container a node of a Ray cluster before it runs a driver (docker-compose.cluster.yml).
COPY cluster/join.sh /usr/local/bin/dotcos-join
RUN pip install --no-cache-dir --no-index --find-links /wheels "dotcos${DOTCOS_EXTRAS:+[$DOTCOS_EXTRAS]}" \
 && rm -rf /wheels
USER dotcos
WORKDIR /home/dotcos
VOLUME ["/indexes"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "service.healthcheck"]
CMD ["dotcos-serve"]
