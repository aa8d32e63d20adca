#!/usr/bin/env bash
# Static (musl) builds of the shim and the installer: one binary per architecture that runs
# on every node whatever its libc (no interpreter, no shared library).
#
#   scripts/build-static.sh setup [TRIPLE...]        toolchain + libseccomp.a, cached
#   scripts/build-static.sh build TRIPLE [PROFILE]   cargo build of both binaries
#   scripts/build-static.sh test-runtime-core TRIPLE [lib|all]
#                                                    runtime-core's tests under qemu-user
#
# TRIPLE: x86_64-unknown-linux-musl | aarch64-unknown-linux-musl (setup: both by default);
# PROFILE: dev (default) | dev-o0 (dev, dependencies at opt-level 0) | release. `build`
# prints the output dir ($CARGO_TARGET_DIR/TRIPLE/{debug,release}).
#
# Toolchain, all from the package registries and cached under $WASMPOD_TOOLS
# (~/.cache/wasmpod/tools), nothing installed system-wide but gperf and dpkg-dev
# (scripts/setup.sh):
# - zig (PyPI `ziglang`, pinned) as C compiler and linker for both targets: it carries musl's
#   headers and libc for every architecture, so no cross gcc or multiarch musl is needed;
# - cargo-zigbuild (crates.io, pinned) drives cargo with zig as the linker and CC;
# - libseccomp, which the shim links statically (shim/src/os/seccomp), built per target
#   from Debian's source package of the version Debian 12 ships (the one the glibc build
#   links, .cargo/config.toml), through a private apt sources list with deb-src (the
#   system's apt state is not touched; apt checks the files against the signed index).
#   LIBSECCOMP_LIB_PATH/LIBSECCOMP_LINK_TYPE are set per build here; they take precedence
#   over the glibc build's [env] in .cargo/config.toml, which stays as it is.
# Every step is skipped when its result is already in the cache.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=${WASMPOD_TOOLS:-$HOME/.cache/wasmpod/tools}
zig_version=0.15.2
zigbuild_version=0.24.1
seccomp_version=2.5.4-1+deb12u1 # bookworm's libseccomp (the glibc build's libseccomp-dev)
seccomp_suite=bookworm
triples=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)

zig_dir=$tools/ziglang-$zig_version/ziglang
seccomp_cache=$tools/libseccomp-$seccomp_version
export PATH="$zig_dir:$tools/bin:$PATH"

log() { echo "build-static: $*" >&2; }

known_triple() {
  local t
  for t in "${triples[@]}"; do [[ $t == "$1" ]] && return 0; done
  echo "build-static: unknown target $1 (known: ${triples[*]})" >&2
  exit 2
}

# zig's name for a Rust musl triple: x86_64-unknown-linux-musl -> x86_64-linux-musl.
zig_target() { echo "${1%%-*}-linux-musl"; }

setup_zig() {
  [[ -x $zig_dir/zig ]] && return
  log "zig $zig_version (PyPI ziglang) -> $tools/ziglang-$zig_version"
  local tmp=$tools/.ziglang.tmp
  rm -rf "$tmp"
  python3 -m pip install -q --disable-pip-version-check --target "$tmp" "ziglang==$zig_version" >&2
  rm -rf "$tools/ziglang-$zig_version"
  mv "$tmp" "$tools/ziglang-$zig_version"
}

setup_zigbuild() {
  if [[ -x $tools/bin/cargo-zigbuild ]] &&
    [[ $("$tools/bin/cargo-zigbuild" --version) == *" $zigbuild_version" ]]; then
    return
  fi
  log "cargo-zigbuild $zigbuild_version (crates.io) -> $tools/bin"
  # Without the default `universal2` feature (macOS fat binaries): fewer crates to build.
  nice -n 10 cargo install -q --locked --no-default-features --root "$tools" \
    "cargo-zigbuild@$zigbuild_version" >&2
}

# The source package, unpacked with Debian's patches, in $1.
fetch_seccomp_source() {
  local dir=$1 keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/src"
  echo "deb-src [signed-by=$keyring] http://deb.debian.org/debian $seccomp_suite main" \
    >"$dir/sources.list"
  local apt_opts=(
    -o "Dir::Etc::sourcelist=$dir/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$dir/lists"
    -o "Dir::Cache=$dir/cache"
    -o "APT::Get::List-Cleanup=0"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
  )
  log "libseccomp $seccomp_version source ($seccomp_suite deb-src, private apt lists in $dir)"
  apt-get "${apt_opts[@]}" update -qq >&2
  (cd "$dir/src" && apt-get "${apt_opts[@]}" source --download-only -qq \
    "libseccomp=$seccomp_version" >&2)
  # apt verified the files' hashes against the signed Sources index; the .dsc's own
  # signature would need debian-keyring.
  dpkg-source --no-check -x "$dir/src/libseccomp_$seccomp_version.dsc" "$dir/libseccomp" >&2
}

# libseccomp.a for $1, compiled by zig for that target: $seccomp_cache/$1/lib.
setup_seccomp() {
  local triple=$1 out=$seccomp_cache/$1
  [[ -f $out/lib/libseccomp.a ]] && return
  local work
  work=$(mktemp -d /tmp/wasmpod-libseccomp.XXXXXX)
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'" RETURN
  fetch_seccomp_source "$work"
  log "libseccomp for $triple -> $out"
  local zt
  zt=$(zig_target "$triple")
  # PIC: Rust links musl executables as static-pie.
  (cd "$work/libseccomp" &&
    CC="zig cc -target $zt" AR="zig ar" RANLIB="zig ranlib" CFLAGS="-O2" \
      ./configure -q --host="$zt" --build="$(gcc -dumpmachine)" --enable-static \
      --disable-shared --with-pic --disable-python --prefix="$work/prefix" >&2 &&
    nice -n 10 make -s -C src -j"$(nproc)" >&2 &&
    make -s -C src install-libLTLIBRARIES >/dev/null)
  mkdir -p "$out.tmp/lib"
  cp "$work/prefix/lib/libseccomp.a" "$out.tmp/lib/"
  echo "$seccomp_version" >"$out.tmp/VERSION"
  rm -rf "$out"
  mv "$out.tmp" "$out"
}

cmd_setup() {
  (($#)) || set -- "${triples[@]}"
  local t
  for t in "$@"; do known_triple "$t"; done
  mkdir -p "$tools"
  # Debian packages the static builds need: gperf and dpkg-source (libseccomp from its
  # source package). qemu-user-static, which the tests run the aarch64 shim with, comes
  # from scripts/setup.sh.
  local missing=()
  command -v gperf >/dev/null 2>&1 || missing+=(gperf)
  command -v dpkg-source >/dev/null 2>&1 || missing+=(dpkg-dev)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
  setup_zig
  setup_zigbuild
  local installed
  installed=$(rustup target list --installed)
  for t in "$@"; do
    grep -qx "$t" <<<"$installed" || { log "adding Rust target $t"; rustup target add "$t" >&2; }
    setup_seccomp "$t"
  done
}

cmd_build() {
  local triple=${1:?usage: build-static.sh build TRIPLE [dev|dev-o0|release]} profile=${2:-dev}
  known_triple "$triple"
  cmd_setup "$triple"
  local dir=debug cargo_profile=$profile config=()
  case $profile in
  dev) ;;
  # The dev profile with every dependency at opt-level 0 instead of 2: the aarch64 build
  # `make test` only runs under qemu (--version, --self-check), where the speed of
  # wasmtime's own code does not matter, and it compiles in less CPU time (cold, 12 min).
  dev-o0) cargo_profile=dev config=(--config 'profile.dev.package."*".opt-level=0') ;;
  release) dir=release ;;
  *) echo "build-static: unknown profile $profile (dev, dev-o0, release)" >&2 && exit 2 ;;
  esac
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}
  log "cargo zigbuild --target $triple --profile $profile"
  (cd "$repo" &&
    LIBSECCOMP_LIB_PATH="$seccomp_cache/$triple/lib" LIBSECCOMP_LINK_TYPE=static \
      cargo zigbuild -q "${config[@]}" --target "$triple" --profile "$cargo_profile" \
      -p containerd-shim-wasmpod -p wasmpod-installer)
  echo "$CARGO_TARGET_DIR/$triple/$dir"
}

# runtime-core's tests built for TRIPLE (dev, dependencies at opt-level 0 as the aarch64
# shim) and run under qemu-user-static, each from runtime-core/ as `cargo test` would: `lib`
# runs the unit tests (engine, compile and cache, WASI context, limits: about 80 s under
# qemu on 2 cores), `all` also the guest and wasi:http suites (about 8 min more).
cmd_test_runtime_core() {
  local triple=${1:?usage: build-static.sh test-runtime-core TRIPLE [lib|all]} which=${2:-lib}
  known_triple "$triple"
  [[ $which == lib || $which == all ]] || { echo "build-static: lib or all, not $which" >&2; exit 2; }
  cmd_setup "$triple"
  local arch=${triple%%-*} skip=()
  # The one wall-clock bound in the suites (a compile past its deadline gives up within 5 s)
  # measures qemu there, not the deadline, which is architecture-independent: native only.
  [[ $which == all ]] && skip=(--skip a_compile_past_the_deadline_fails)
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}
  log "cargo zigbuild --tests -p wasmpod-runtime-core --target $triple, $which run under qemu-$arch-static"
  local tests
  # Every test target is built (cargo-zigbuild has no `test --no-run`); `lib` runs the
  # library's own.
  tests=$(cd "$repo" &&
    cargo zigbuild -q --config 'profile.dev.package."*".opt-level=0' --target "$triple" \
      --tests -p wasmpod-runtime-core --message-format=json |
    python3 -c '
import json, sys
only_lib = sys.argv[1] == "lib"
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        if not only_lib or "lib" in m["target"]["kind"]:
            print(m["executable"])' "$which")
  [[ -n $tests ]] || { echo "build-static: no test binary was built" >&2; exit 1; }
  local test
  for test in $tests; do
    log "qemu-$arch-static $(basename "$test")"
    (cd "$repo/runtime-core" && "qemu-$arch-static" "$test" -q --test-threads=2 "${skip[@]}")
  done
}

case ${1:-} in
setup) shift && cmd_setup "$@" ;;
build) shift && cmd_build "$@" ;;
test-runtime-core) shift && cmd_test_runtime_core "$@" ;;
*)
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
