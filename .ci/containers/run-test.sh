#!/usr/bin/env bash
# `make test-containers`: a Docker engine (installed and started here when missing and we are root
# on Debian), the python base image (a local stand-in when no registry serves it), the compose test,
# then the engine stopped again if this script started it, with the host network settings restored.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=.ci/containers
started=0
if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    bash "$here/engine.sh" install
    bash "$here/engine.sh" start
    started=1
  elif [ -n "${CI:-}" ]; then
    echo "test-containers: no Docker engine, and installing one needs root on Debian" >&2
    exit 1
  else
    echo "test-containers skipped: no Docker engine, and installing one needs root on Debian (apt-get)"
    exit 0
  fi
fi
cleanup() {
  docker image rm -f dotcos:test dotcos:test-ray >/dev/null 2>&1 || true
  docker image prune -f >/dev/null 2>&1 || true
  if [ "$started" = 1 ]; then bash "$here/engine.sh" stop; fi
}
trap cleanup EXIT
base=python:3.11.11-slim-bookworm
if ! docker image inspect "$base" >/dev/null 2>&1 && ! timeout 60 docker pull -q "$base" >/dev/null 2>&1; then
  bash "$here/base-image.sh"
fi
start=$(date +%s)
DOTCOS_REQUIRE_CONTAINERS=1 .venv/bin/python -m pytest -q -p no:cacheprovider -m containers tests/containers
echo "container test: $(( $(date +%s) - start ))s"
