#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim when no image registry is reachable (CI):
# debootstrap a minimal Debian bookworm from the mirror apt already uses, add this
# machine's CPython 3.11 under /usr/local (where python:3.11-slim keeps its own), and
# `docker import` the result. Pass it to the builds as BASE_IMAGE.
#
# Why not Debian's python3.11: bookworm ships 3.11.2, and pinned wheels declare
# Requires-Python >= 3.11.5 (soupsieve 4.1.3 does), so pip refuses them. The host's
# interpreter is the one constraints.txt was resolved with. Without a suitable one
# (e.g. the host runs Debian's own), Debian's python3 is used and such pins may fail.
#
#   infra/ci/base_image.sh [TAG]      (default tunestack/base:bookworm; no-op if it exists)
set -euo pipefail

tag=${1:-tunestack/base:bookworm}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
python=${PYTHON:-python3.11}
# the libraries CPython's extension modules link against, OpenMP for torch/llama.cpp, TLS
packages=ca-certificates,curl,libgomp1,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g
packages+=,libncursesw6,libreadline8,libuuid1,libgdbm6,libexpat1,libnsl2,libtirpc3

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists"
  exit 0
fi
command -v debootstrap >/dev/null || {
  echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2
  exit 1
}

prefix=$("$python" -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)
ok_version=$("$python" -c 'import sys; print(int(sys.version_info[:3] >= (3, 11, 5) and sys.version_info[:2] == (3, 11)))' 2>/dev/null || echo 0)
copy_python=0
if [ -n "$prefix" ] && [ "$prefix" != /usr ] && [ "$ok_version" = 1 ] &&
  [ -x "$prefix/bin/python3.11" ] && [ -d "$prefix/lib/python3.11" ]; then
  copy_python=1
else
  echo "note: no CPython >= 3.11.5 outside /usr found; using Debian's python3 ($suite)" >&2
  packages+=,python3,python3-venv
fi

root=$(mktemp -d /tmp/tunestack-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror"

if [ "$copy_python" = 1 ]; then
  echo "adding CPython $("$prefix/bin/python3.11" -V 2>&1 | cut -d' ' -f2) from $prefix"
  mkdir -p "$root/usr/local/bin" "$root/usr/local/lib" "$root/usr/local/include"
  cp -a "$prefix/bin/python3.11" "$root/usr/local/bin/"
  cp -a "$prefix"/lib/libpython3.11.so* "$root/usr/local/lib/" 2>/dev/null || true
  cp -a "$prefix/include/python3.11" "$root/usr/local/include/"
  tar -C "$prefix/lib" --exclude='python3.11/site-packages/*' --exclude='python3.11/test' \
    --exclude='__pycache__' --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' \
    -cf - python3.11 | tar -C "$root/usr/local/lib" -xf -
  for link in python3 python; do ln -sf python3.11 "$root/usr/local/bin/$link"; done
  chroot "$root" /sbin/ldconfig
  chroot "$root" /usr/local/bin/python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, venv, ensurepip'
fi

# Trim what a container never needs: apt lists, docs, man pages, caches, logs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$tag"
echo "built base image $tag"
