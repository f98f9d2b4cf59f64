# syntax=docker/dockerfile:1
# One image for both roles: `dotcos-serve` (default) and `dotcos-build` (the batch job).

FROM python:3.11.11-slim-bookworm AS wheels
# --build-arg DOTCOS_EXTRAS=ray adds Ray (sharded builds on a cluster, shards on Ray Serve).
ARG DOTCOS_EXTRAS=""
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY index_builder ./index_builder
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".${DOTCOS_EXTRAS:+[$DOTCOS_EXTRAS]}"

FROM python:3.11.11-slim-bookworm AS runtime
ARG DOTCOS_EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DOTCOS_INDEX_ROOT=/indexes \
    DOTCOS_HOST=0.0.0.0 \
    DOTCOS_PORT=8000 \
    OMP_WAIT_POLICY=PASSIVE
RUN groupadd --system --gid 10001 dotcos \
 && useradd --system --uid 10001 --gid dotcos --home-dir /home/dotcos --create-home dotcos \
 && mkdir -p /indexes /data \
 && chown dotcos:dotcos /indexes
COPY --from=wheels /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "dotcos${DOTCOS_EXTRAS:+[$DOTCOS_EXTRAS]}" \
 && rm -rf /wheels
USER dotcos
WORKDIR /home/dotcos
VOLUME ["/indexes"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "service.healthcheck"]
CMD ["dotcos-serve"]
