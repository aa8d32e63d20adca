#!/usr/bin/env bash
# `make bench`: the performance figures of issue 4 on this machine, wasmpod next to runc in
# one run against one private containerd (scripts/private-containerd.sh), so the ratios
# compare like with like. Builds release, builds the guests and a generated 60k-function
# module, imports the images, runs `wasmpod-bench run` (bench/src/main.rs: the figures,
# the table, the JSON) and removes everything on exit.
#
# The compile cache is a fresh dir ($WASMPOD_CACHE_DIR, inherited by containerd, the shims
# and their runners); containerd runs at debug level so the shim logs its own start timing.
# Knobs (environment): BENCH_RUNS (ctr run rounds, 20), BENCH_FIRST_RUNS (uncached starts of
# the big module, 3), BENCH_TASKS (200), BENCH_PARALLEL (4), BENCH_KILL_RUNS (20),
# BENCH_MANY (sleeping containers for the density figure, 500), BENCH_POD_SIZE (10),
# BENCH_SPAWN_RUNS (rounds of bench/spawn-paths.py, 20),
# BENCH_LOG_LEVEL (debug; `info` drops the shim timing), BENCH_SHIM (another shim binary
# than the release build, e.g. the static one: bench/static.sh compares the two). Needs root.
# Output: the table on stdout, JSON in target/bench/ of this repository (latest.json and a
# timestamped copy).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}"
began=$(date +%s)

echo "bench: building release (shim, image tool, bench driver) and the guests"
cargo build -q --release -p containerd-shim-wasmpod -p wasmpod-test -p wasmpod-bench
# The guests' own workspace and target dir (as scripts/demo.sh).
env -u CARGO_TARGET_DIR cargo build -q --release --target wasm32-wasip1 \
  --manifest-path test/guests/Cargo.toml --bin hello --bin sleep --bin spin
guests="$repo/test/guests/target/wasm32-wasip1/release"
bin="$CARGO_TARGET_DIR/release"
shim_dir="$bin"

# A fresh compile cache, exported before containerd starts so every shim and runner sees it.
bench_tmp=$(mktemp -d /tmp/wasmpod-bench-XXXXXX)
export WASMPOD_CACHE_DIR="$bench_tmp/cache"
mkdir -p "$WASMPOD_CACHE_DIR"
if [[ -n ${BENCH_SHIM:-} ]]; then # containerd finds the shim by name on its PATH
  shim_dir="$bench_tmp/shim"
  mkdir -p "$shim_dir"
  ln -s "$(realpath "$BENCH_SHIM")" "$shim_dir/containerd-shim-wasmpod-v1"
  echo "bench: shim $BENCH_SHIM"
fi
ulimit -n 65536 2>/dev/null || true
containerd_log_level=${BENCH_LOG_LEVEL:-debug}
source "$repo/scripts/private-containerd.sh"
# private-containerd.sh's cleanup keeps the exit status it finds in $?.
bench_cleanup() {
  local status=$?
  set +e
  rm -rf "$bench_tmp"
  (exit "$status")
  cleanup
}
trap bench_cleanup EXIT INT TERM

echo "bench: building and importing images"
"$bin/wasmpod-bench" gen-module --functions 60000 --out "$bench_tmp/big.wasm"
image() { "$bin/wasmpod-image" "$@" >/dev/null; }
image wasm --name localhost/wasmpod/hello:latest --wasm "$guests/hello.wasm" --out "$bench_tmp/hello.tar"
image wasm --name localhost/wasmpod/sleep:latest --wasm "$guests/sleep.wasm" --arg 3600 \
  --out "$bench_tmp/sleep.tar"
image wasm --name localhost/wasmpod/spin:latest --wasm "$guests/spin.wasm" --out "$bench_tmp/spin.tar"
image wasm --name localhost/wasmpod/big:latest --wasm "$bench_tmp/big.wasm" --out "$bench_tmp/big.tar"
image busybox --name localhost/busybox:latest --out "$bench_tmp/busybox.tar"
for tar in hello sleep spin big; do
  ctr -a "$sock" -n "$ns" images import --all-platforms "$bench_tmp/$tar.tar" >/dev/null
done
ctr -a "$sock" -n "$ns" images import "$bench_tmp/busybox.tar" >/dev/null

out_dir="$repo/target/bench"
mkdir -p "$out_dir"
out="$out_dir/bench-$(date +%Y%m%d-%H%M%S).json"
"$bin/wasmpod-bench" run --socket "$sock" --namespace "$ns" --fifo-dir "$work/fifo" \
  --cache-dir "$WASMPOD_CACHE_DIR" --containerd-log "$work/containerd.log" --out "$out" \
  --runs "${BENCH_RUNS:-20}" --first-runs "${BENCH_FIRST_RUNS:-3}" \
  --tasks "${BENCH_TASKS:-200}" --parallel "${BENCH_PARALLEL:-4}" \
  --kill-runs "${BENCH_KILL_RUNS:-20}" --many "${BENCH_MANY:-500}" \
  --pod-size "${BENCH_POD_SIZE:-10}"
cp "$out" "$out_dir/latest.json"
echo
# How a container process gets into its cgroup: the spawn paths side by side (os/spawn.rs).
python3 "$repo/bench/spawn-paths.py" "$shim_dir/containerd-shim-wasmpod-v1" "${BENCH_SPAWN_RUNS:-20}" \
  "$out_dir/spawn.json"
echo "bench: done in $(($(date +%s) - began)) s (build included)"
"$repo/bench/http.sh"  # issue 6: wasi:http hello handler vs wasmtime serve (own containerd)
