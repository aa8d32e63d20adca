#!/usr/bin/env bash
# `make bench-static`: the static (musl + mimalloc) release shim next to the glibc release
# shim, alternating in one run so machine load weighs on both alike: each round runs
# bench/bench.sh (which runs bench/http.sh) once per build, the order flipping every round
# (glibc musl, musl glibc, ...), each run with its own private containerd and fresh
# compile cache (BENCH_SHIM picks the binary). Then a table of the figures issue 14 holds
# to within 5%: start (ctr run hello), compile (big module, first start), idle PSS,
# wasi:http req/s and the HTTP pod's idle PSS; medians over the rounds. Last, the start
# again with the two shims alternating run by run in one containerd (bench/static-start.sh),
# the figure least moved by the machine's load.
#
# Knobs (environment): STATIC_BENCH_ROUNDS (2), STATIC_BENCH_START_RUNS (40), and bench.sh's
# / http.sh's own; the defaults here keep a run short: BENCH_MANY=50, BENCH_FIRST_RUNS=3, BENCH_TASKS=100,
# HTTP_BENCH_DURATION=10s, no `wasmtime serve` column. Needs root.
# Output: the table on stdout; every run's JSON and log in target/bench/static/.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}"
rounds=${STATIC_BENCH_ROUNDS:-2}
export BENCH_MANY=${BENCH_MANY:-50} BENCH_FIRST_RUNS=${BENCH_FIRST_RUNS:-3}
export BENCH_TASKS=${BENCH_TASKS:-100} HTTP_BENCH_DURATION=${HTTP_BENCH_DURATION:-10s}
export HTTP_BENCH_WASMTIME=${HTTP_BENCH_WASMTIME:-/nonexistent} HTTP_BENCH_NO_BUILD=1

echo "bench-static: building release, glibc and x86_64 musl"
cargo build -q --release -p containerd-shim-wasmpod -p wasmpod-test -p wasmpod-bench \
  -p wasmpod-fixtures
musl_dir=$(scripts/build-static.sh build x86_64-unknown-linux-musl release)
declare -A shim=(
  [glibc]="$CARGO_TARGET_DIR/release/containerd-shim-wasmpod-v1"
  [musl]="$musl_dir/containerd-shim-wasmpod-v1"
)
out=$repo/target/bench/static
rm -rf "$out"
mkdir -p "$out"
for ((round = 1; round <= rounds; round++)); do
  order=(glibc musl)
  ((round % 2)) || order=(musl glibc)
  for build in "${order[@]}"; do
    echo "bench-static: round $round/$rounds, $build (${shim[$build]})"
    BENCH_SHIM=${shim[$build]} bench/bench.sh >"$out/$build-$round.log" 2>&1 ||
      { tail -n 30 "$out/$build-$round.log" >&2; exit 1; }
    cp target/bench/latest.json "$out/$build-$round.json"
    cp "$CARGO_TARGET_DIR/bench/http.json" "$out/$build-$round.http.json"
  done
done

echo "bench-static: start of hello, the two shims alternating run by run (bench/static-start.sh)"
bench/static-start.sh "${shim[glibc]}" "${shim[musl]}" "$out/start-interleaved.json" \
  >"$out/start-interleaved.log" 2>&1 || { tail -n 30 "$out/start-interleaved.log" >&2; exit 1; }

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def row(d, prefix):
    return next(r["median"] for r in d["rows"] if r["figure"].startswith(prefix))
figures = [  # name, unit, reader of (bench json, http json), higher is better
    ("start: ctr run --rm hello", "ms", lambda b, h: row(b, "ctr run --rm: wasmpod hello"), False),
    ("start: shim Create (hello)", "ms", lambda b, h: b["start_breakdown_shim"]["hello"]["create_ms"], False),
    ("compile: big module, first start", "ms", lambda b, h: row(b, "ctr run --rm: big module, first"), False),
    ("idle PSS / container, 5 in one pod", "MiB", lambda b, h: row(b, "idle PSS per container, 5 in one pod"), False),
    ("idle PSS / container, 5 pods", "MiB", lambda b, h: row(b, "idle PSS per container, 5 in five pods"), False),
    ("tasks/s (create..delete)", "1/s", lambda b, h: row(b, "tasks/s, create+start+wait+delete"), True),
    ("wasi:http hello", "req/s", lambda b, h: h["wasmpod"]["rps"], True),
    ("wasi:http pod idle PSS", "MiB", lambda b, h: h["memory_kb"]["idle_after_load"]["pss"] / 1024, False),
]
def load(build, r):
    return (json.load(open(f"{out}/{build}-{r}.json")), json.load(open(f"{out}/{build}-{r}.http.json")))
runs = {b: [load(b, r) for r in range(1, rounds + 1)] for b in ("glibc", "musl")}
print(f"\nstatic (musl) vs glibc shim, release, {rounds} alternating round(s), medians:")
print(f"{'figure':38} {'glibc':>10} {'musl':>10} {'musl/glibc':>10}  samples (glibc | musl)")
for name, unit, get, higher in figures:
    vals = {b: [get(*x) for x in runs[b]] for b in runs}
    g, m = (statistics.median(vals[b]) for b in ("glibc", "musl"))
    ratio = m / g if g else float("nan")
    worse = (ratio < 0.95) if higher else (ratio > 1.05)
    fmt = lambda v: " ".join(f"{x:.4g}" for x in v)
    print(f"{name + ' (' + unit + ')':38} {g:10.4g} {m:10.4g} {ratio:10.3f}{'  >5% worse' if worse else ''}"
          f"  {fmt(vals['glibc'])} | {fmt(vals['musl'])}")
interleaved = json.load(open(f"{out}/start-interleaved.json"))
g, m = (statistics.median(interleaved[b]) for b in ("glibc", "musl"))
name = f"start, interleaved x{len(interleaved['glibc'])} (ms)"
print(f"{name:38} {g:10.4g} {m:10.4g} {m / g:10.3f}{'  >5% worse' if m / g > 1.05 else ''}"
      f"  (one containerd, the shims alternating run by run)")
PY
echo "bench-static: runs in $out"
