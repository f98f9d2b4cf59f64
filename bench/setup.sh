#!/usr/bin/env bash
# The benchmark's own set-up: the wrk load generator (Debian package) when it is missing.
set -euo pipefail
if ! command -v wrk >/dev/null; then
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk
  else
    echo "install wrk (https://github.com/wg/wrk) and re-run" >&2
    exit 1
  fi
fi
# Chroma server as a baseline, in its own virtualenv (optional: the benchmark notes it when absent).
CHROMA_VENV="$(dirname "$0")/.work/chroma-venv"
if [ ! -x "$CHROMA_VENV/bin/chroma" ]; then
  python3 -m venv "$CHROMA_VENV" && "$CHROMA_VENV/bin/pip" install --quiet chromadb \
    || echo "chromadb did not install; the Chroma baseline will be skipped" >&2
fi
