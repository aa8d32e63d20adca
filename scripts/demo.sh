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

work=$(mktemp -d /tmp/wasmpod-demo-XXXXXX)
containerd_pid=""
sock="$work/c.sock"
ns=wasmpod-demo-$$
cleanup() {
  local status=$?
  set +e
  if [[ -S $sock ]]; then
    ctr -a "$sock" -n "$ns" tasks kill -s SIGKILL demo-hello >/dev/null 2>&1
    ctr -a "$sock" -n "$ns" tasks delete demo-hello >/dev/null 2>&1
    ctr -a "$sock" -n "$ns" containers rm demo-hello >/dev/null 2>&1
  fi
  if [[ -n $containerd_pid ]]; then
    kill -TERM "$containerd_pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$containerd_pid" 2>/dev/null
    wait "$containerd_pid" 2>/dev/null
  fi
  # Shims of this containerd carry its socket address in their command line.
  for pid in $(pgrep -f -- "-address $sock" || true); do kill -KILL "$pid" 2>/dev/null; done
  # Unmount anything left under the temp dir, deepest first.
  awk -v d="$work" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r \
    | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  if ((status != 0)) && [[ -f $work/containerd.log ]]; then
    echo "demo: failed; containerd log tail:" >&2
    tail -n 30 "$work/containerd.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT INT TERM

cat >"$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$work/c.ttrpc.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/root/opt"
TOML

echo "demo: starting a private containerd in $work"
PATH="$shim_dir:$PATH" containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 200); do
  ctr -a "$sock" version >/dev/null 2>&1 && break
  kill -0 "$containerd_pid" 2>/dev/null || { echo "demo: containerd exited" >&2; exit 1; }
  sleep 0.05
done
ctr -a "$sock" version >/dev/null

echo "demo: building and importing $image"
cargo run -q -p wasmpod-test --bin wasmpod-image -- wasm --name "$image" --wasm "$hello_wasm" --out "$work/hello.tar"
ctr -a "$sock" -n "$ns" images import --all-platforms "$work/hello.tar"

echo "demo: ctr run --rm --runtime io.containerd.wasmpod.v1 $image demo-hello"
ctr -a "$sock" -n "$ns" run --rm --fifo-dir "$work/fifo" --runtime io.containerd.wasmpod.v1 "$image" demo-hello
echo "demo: ok"
