#!/usr/bin/env bash
# Wall time of `ctr run --rm` for the hello wasm image on wasmpod next to a minimal
# busybox container (`/bin/true`) on runc, interleaved in one run against one private
# containerd, so both see the same machine state. Prints hyperfine's table.
#   scripts/measure-start.sh [RUNS]      (default 20; needs root, run `make setup` first)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}"
runs=${1:-20}
command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine

cargo build -q --release -p containerd-shim-wasmpod -p wasmpod-test
env -u CARGO_TARGET_DIR cargo build -q --release --target wasm32-wasip1 \
  --manifest-path test/guests/Cargo.toml --bin hello
shim_dir="$CARGO_TARGET_DIR/release"
source "$repo/scripts/private-containerd.sh"

image_tool="$CARGO_TARGET_DIR/release/wasmpod-image"
"$image_tool" wasm --name localhost/wasmpod/hello:latest \
  --wasm test/guests/target/wasm32-wasip1/release/hello.wasm --out "$work/hello.tar" >/dev/null
"$image_tool" busybox --name localhost/busybox:latest --out "$work/busybox.tar" >/dev/null
ctr -a "$sock" -n "$ns" images import --all-platforms "$work/hello.tar" >/dev/null
ctr -a "$sock" -n "$ns" images import "$work/busybox.tar" >/dev/null

c="ctr -a $sock -n $ns run --rm --fifo-dir $work/fifo"
hyperfine -N --warmup 3 --runs "$runs" \
  -n "wasmpod hello (ctr run --rm)" "$c --runtime io.containerd.wasmpod.v1 localhost/wasmpod/hello:latest m-wasm" \
  -n "runc busybox true (ctr run --rm)" "$c localhost/busybox:latest m-runc /bin/true"
