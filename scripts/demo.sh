#!/usr/bin/env bash
# Runs a WebAssembly "hello" image through wasmpod end to end: builds the shim, starts a
# private containerd (own root, state and socket under a temp dir; the system containerd
# is never touched), imports a wasm image and runs it with
#   ctr run --rm --runtime io.containerd.wasmpod.v1 localhost/wasmpod/hello:latest demo-hello
# Everything is stopped and removed on exit, whatever happens.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}"
image=localhost/wasmpod/hello:latest

"$repo/scripts/setup.sh"

echo "demo: building the shim"
cargo build -p containerd-shim-wasmpod
echo "demo: building the hello guest (wasm32-wasip1)"
# Its own target dir: the path below is where the guests' workspace puts it.
env -u CARGO_TARGET_DIR cargo build --release --target wasm32-wasip1 \
  --manifest-path test/guests/Cargo.toml --bin hello
hello_wasm="$repo/test/guests/target/wasm32-wasip1/release/hello.wasm"
shim_dir="$CARGO_TARGET_DIR/debug"

source "$repo/scripts/private-containerd.sh"

echo "demo: building and importing $image"
cargo run -q -p wasmpod-test --bin wasmpod-image -- wasm --name "$image" --wasm "$hello_wasm" --out "$work/hello.tar"
ctr -a "$sock" -n "$ns" images import --all-platforms "$work/hello.tar"

echo "demo: ctr run --rm --runtime io.containerd.wasmpod.v1 $image demo-hello"
ctr -a "$sock" -n "$ns" run --rm --fifo-dir "$work/fifo" --runtime io.containerd.wasmpod.v1 "$image" demo-hello
echo "demo: ok"
