#!/usr/bin/env bash
# `make release`: the static (musl) shim and installer of every architecture, release
# profile, with their sha256, laid out for the multi-arch installer image
# (installer/Dockerfile takes dist/$TARGETARCH/):
#
#   dist/amd64/{containerd-shim-wasmpod-v1,wasmpod-installer}{,.sha256}
#   dist/arm64/...
#
#   scripts/release.sh [ARCH...]     ARCH: amd64 | arm64 (Docker's names); default both
#
# Builds through scripts/build-static.sh (toolchain and libseccomp cached). A `.sha256`
# holds `sha256sum` output (`<hex>  <name>`), what the installer checks the shim against.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(($#)) || set -- amd64 arm64
for arch in "$@"; do
  case $arch in
  amd64) triple=x86_64-unknown-linux-musl ;;
  arm64) triple=aarch64-unknown-linux-musl ;;
  *) echo "release: unknown arch $arch (amd64 | arm64)" >&2 && exit 2 ;;
  esac
  out=$("$repo/scripts/build-static.sh" build "$triple" release)
  dist=$repo/dist/$arch
  rm -rf "$dist"
  mkdir -p "$dist"
  for bin in containerd-shim-wasmpod-v1 wasmpod-installer; do
    cp "$out/$bin" "$dist/$bin"
    (cd "$dist" && sha256sum "$bin" >"$bin.sha256")
  done
  echo "release: $arch ($triple):"
  (cd "$dist" && cat ./*.sha256 | sed 's/^/  /')
done
