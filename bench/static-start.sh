#!/usr/bin/env bash
# Part of `make bench-static` (bench/static.sh): the start of the hello image on the glibc
# and the musl shim, alternating run by run against one private containerd, so both see
# the same machine at the same moment (whole bench runs, even alternated, drift with the
# machine's load by more than the difference measured). Each run is
#   ctr run --rm --runtime <absolute path of the shim binary> hello
# (containerd starts a shim given by path as it does one named io.containerd.wasmpod.v1).
# Usage: bench/static-start.sh GLIBC_SHIM MUSL_SHIM OUT_JSON   (STATIC_BENCH_START_RUNS: 40)
# Writes {"glibc": [ms, ...], "musl": [ms, ...]}; three warm-up pairs (the first compiles
# the module into the cache both share) are not counted. Needs root.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}"
glibc_shim=$1 musl_shim=$2 out_json=$3
runs=${STATIC_BENCH_START_RUNS:-40}
warmup=3

shim_dir=$(dirname "$glibc_shim")
source "$repo/scripts/private-containerd.sh"

image=localhost/wasmpod/hello:latest
"$CARGO_TARGET_DIR/release/wasmpod-image" wasm --name "$image" \
  --wasm test/guests/target/wasm32-wasip1/release/hello.wasm --out "$work/hello.tar" >/dev/null
ctr -a "$sock" -n "$ns" images import --all-platforms "$work/hello.tar" >/dev/null

declare -A shim=([glibc]=$glibc_shim [musl]=$musl_shim) times=([glibc]="" [musl]="")
for ((i = 0; i < warmup + runs; i++)); do
  order=(glibc musl)
  ((i % 2)) || order=(musl glibc)
  for build in "${order[@]}"; do
    began=$(date +%s%N)
    ctr -a "$sock" -n "$ns" run --rm --fifo-dir "$work/fifo" --runtime "${shim[$build]}" \
      "$image" "start-$build-$i" >/dev/null
    ended=$(date +%s%N)
    ((i < warmup)) || times[$build]+="$(((ended - began) / 1000)) "
  done
done
python3 - "$out_json" "${times[glibc]}" "${times[musl]}" <<'PY'
import json, sys
out, glibc, musl = sys.argv[1:]
ms = lambda s: [int(us) / 1000 for us in s.split()]
json.dump({"glibc": ms(glibc), "musl": ms(musl)}, open(out, "w"))
PY
