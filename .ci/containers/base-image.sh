#!/usr/bin/env bash
# Build a local stand-in for python:3.11.11-slim-bookworm from Debian packages (for machines that
# reach Debian and PyPI but no image registry) and tag it under the official name, so the
# Dockerfile builds unchanged. Debian's Python 3.11 in a venv at /usr/local makes `python` and
# `pip` behave like the official image. Like the official image it trusts no extra CA: a build
# behind a TLS-intercepting proxy passes its CA to the Dockerfile (EXTRA_CA_CERTS).
#
#   base-image.sh            # no-op when the tag exists
set -euo pipefail
TAG="${TAG:-python:3.11.11-slim-bookworm}"
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG present"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The chroot's own pip (pinning pip/setuptools/wheel as the official image does) reaches PyPI from
# this host, so while building it trusts the host's extra CAs; they are removed again afterwards.
extra=/usr/local/share/ca-certificates
mmdebstrap --variant=minbase --mode=root --format=tar \
  --include=ca-certificates,netbase,tzdata,python3.11,python3.11-venv \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='chroot "$1" python3.11 -m venv /usr/local' \
  --customize-hook="mkdir -p \"\$1\"$extra/host && cp $extra/*.crt \"\$1\"$extra/host/ 2>/dev/null; chroot \"\$1\" update-ca-certificates >/dev/null" \
  --customize-hook='chroot "$1" env -u PIP_FIND_LINKS PIP_CERT=/etc/ssl/certs/ca-certificates.crt /usr/local/bin/pip install -q --no-cache-dir pip==24.0 setuptools==65.5.1 wheel==0.45.1' \
  --customize-hook="rm -rf \"\$1\"$extra/host && chroot \"\$1\" update-ca-certificates --fresh >/dev/null" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/root/.cache' \
  bookworm "$work/base.tar" \
  "deb http://deb.debian.org/debian bookworm main" "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >"$work/log" 2>&1 \
  || { tail -20 "$work/log"; exit 1; }
docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "local stand-in for $TAG: Debian bookworm python3.11 in a venv at /usr/local" \
  "$work/base.tar" "$TAG" >/dev/null
echo "built $TAG"
