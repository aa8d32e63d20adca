#!/usr/bin/env bash
# The wasi:http figures of issue 6 on this machine: wrk against the hello handler
# (test/guests-http/hello, one stderr line per request) served by wasmpod through a private
# containerd (scripts/private-containerd.sh), next to `wasmtime serve` of the same component
# in the same run and the same network namespace (only `lo`), plus the memory of the idle
# HTTP pod (PSS of its shim and runner).
#
# The guest's output is KEPT on the wasmpod side: the task's stdout/stderr go to a file
# (`ctr run --log-uri file://...`), and its lines are counted after the run; `wasmtime serve`'s
# stderr goes to a file as well and is counted the same way.
#
# Knobs (environment): HTTP_BENCH_DURATION (wrk duration, 20s), HTTP_BENCH_CONNECTIONS (50),
# HTTP_BENCH_THREADS (wrk threads, 2), HTTP_BENCH_WARMUP (per server, before measuring, 2s;
# 0 skips), HTTP_BENCH_ROUNDS (1; more alternate the order and the table shows the median,
# the lower one for an even count),
# HTTP_BENCH_NO_BUILD (1: skip the release build, e.g. while another build holds the
# target dir's lock), HTTP_BENCH_WASMTIME (the `wasmtime` binary, default ~/.cache/wasmpod/tools/bin/wasmtime,
# installed there with `cargo install wasmtime-cli --version 48.0.8` when missing; another
# path that does not exist: the wasmtime column is n/a), BENCH_SHIM (another shim binary
# than the release build, as in bench.sh). Needs root, wrk, curl, jq, iproute2.
# Output: the table on stdout, JSON in $CARGO_TARGET_DIR/bench/http.json.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmpod/target}"
duration=${HTTP_BENCH_DURATION:-20s}
connections=${HTTP_BENCH_CONNECTIONS:-50}
threads=${HTTP_BENCH_THREADS:-2}
warmup=${HTTP_BENCH_WARMUP:-2s}
rounds=${HTTP_BENCH_ROUNDS:-1}
wasmtime=${HTTP_BENCH_WASMTIME:-$HOME/.cache/wasmpod/tools/bin/wasmtime}
wasmpod_port=8080
wasmtime_port=8081
image=localhost/wasmpod/http-hello:latest
began=$(date +%s)

# The load generator and helpers come from Debian's packages; containerd/ctr from setup.
declare -A package=([wrk]=wrk [curl]=curl [jq]=jq [ip]=iproute2)
missing=()
for tool in "${!package[@]}"; do
  command -v "$tool" >/dev/null || missing+=("${package[$tool]}")
done
if ((${#missing[@]})); then
  echo "http bench: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in ctr containerd; do
  command -v "$tool" >/dev/null || { echo "http bench: needs $tool (make setup)" >&2; exit 1; }
done

if [[ ${HTTP_BENCH_NO_BUILD:-0} == 1 ]]; then
  echo "http bench: HTTP_BENCH_NO_BUILD=1, using the release binaries as they are"
else
  echo "http bench: building release (shim, image tool, fixtures)"
  cargo build -q --release -p containerd-shim-wasmpod -p wasmpod-test -p wasmpod-fixtures
fi
bin="$CARGO_TARGET_DIR/release"
shim_dir="$bin"
# The hello component as test/fixtures' build.rs built it (wasmpod_fixtures::http::HELLO_PATH);
# the newest copy under the target dir.
hello_wasm=$(ls -t "$CARGO_TARGET_DIR"/*/build/wasmpod-fixtures-*/out/guests-http/wasm32-wasip2/release/hello.wasm 2>/dev/null | head -n 1)
[[ -n $hello_wasm ]] || { echo "http bench: hello.wasm not found under $CARGO_TARGET_DIR" >&2; exit 1; }
have_wasmtime=0
tools_root="$HOME/.cache/wasmpod/tools"
if [[ ! -x $wasmtime && $wasmtime == "$tools_root/bin/wasmtime" ]]; then
  # The baseline, built once per machine (several minutes on 2 cores).
  echo "http bench: installing wasmtime-cli 48.0.8 into $tools_root (the baseline)"
  cargo install -q --locked wasmtime-cli --version 48.0.8 --root "$tools_root" \
    || echo "http bench: wasmtime-cli did not install" >&2
fi
if [[ -x $wasmtime ]]; then
  have_wasmtime=1
  echo "http bench: $("$wasmtime" --version)"
else
  echo "http bench: no wasmtime at $wasmtime; the wasmtime serve column will be n/a" >&2
fi

http_tmp=$(mktemp -d /tmp/wasmpod-http-bench-XXXXXX)
if [[ -n ${BENCH_SHIM:-} ]]; then # containerd finds the shim by name on its PATH
  shim_dir="$http_tmp/shim"
  mkdir -p "$shim_dir"
  ln -s "$(realpath "$BENCH_SHIM")" "$shim_dir/containerd-shim-wasmpod-v1"
  echo "http bench: shim $BENCH_SHIM"
fi
netns=wasmpod-http-$$
ctr_id=http-hello-$$
wasmtime_pid=""
ulimit -n 65536 2>/dev/null || true
source "$repo/scripts/private-containerd.sh"
# private-containerd.sh's cleanup keeps the exit status it finds in $? and exits with it.
http_cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n $wasmtime_pid ]]; then
    kill -KILL "$wasmtime_pid" 2>/dev/null
    wait "$wasmtime_pid" 2>/dev/null
  fi
  if [[ -S $sock ]]; then
    ctr -a "$sock" -n "$ns" tasks kill -s SIGKILL "$ctr_id" >/dev/null 2>&1
    for _ in $(seq 50); do
      ctr -a "$sock" -n "$ns" tasks delete "$ctr_id" >/dev/null 2>&1 && break
      sleep 0.1
    done
    ctr -a "$sock" -n "$ns" containers rm "$ctr_id" >/dev/null 2>&1
  fi
  ip netns delete "$netns" 2>/dev/null
  rm -rf "$http_tmp"
  (exit "$status")
  cleanup
}
trap http_cleanup EXIT INT TERM

ip netns add "$netns"
ip -n "$netns" link set lo up
in_ns() { ip netns exec "$netns" "$@"; }

wait_http() { # port pid-to-watch what
  for _ in $(seq 600); do
    in_ns curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$1/" && return 0
    if [[ -n $2 ]] && ! kill -0 "$2" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "http bench: $3 did not answer on port $1" >&2
  return 1
}

echo "http bench: building and importing the image"
"$bin/wasmpod-image" wasm --name "$image" --wasm "$hello_wasm" --out "$http_tmp/hello.tar" >/dev/null
ctr -a "$sock" -n "$ns" images import --all-platforms "$http_tmp/hello.tar" >/dev/null

wasmpod_log="$http_tmp/wasmpod.log"
wasmtime_log="$http_tmp/wasmtime-serve.log"
ctr -a "$sock" -n "$ns" run -d --log-uri "file://$wasmpod_log" \
  --runtime io.containerd.wasmpod.v1 --with-ns "network:/var/run/netns/$netns" \
  "$image" "$ctr_id" >/dev/null
wait_http "$wasmpod_port" "" wasmpod

# The pod's processes: the shim of this containerd and its descendants (the `__run` runner).
pss_kb() { awk '/^Pss:/ {print $2; exit}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
rss_kb() { awk '/^Rss:/ {print $2; exit}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
descendants() {
  local pid
  for pid in $(pgrep -P "$1" || true); do
    echo "$pid"
    descendants "$pid"
  done
}
# Prints "shim_pss runner_pss total_pss total_rss processes" in kB.
pod_memory() {
  local shim_pss=0 runner_pss=0 rss=0 n=0 pid
  for pid in $(pgrep -f -- "-address $sock" || true); do
    [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"-id $ctr_id"* ]] || continue
    shim_pss=$((shim_pss + $(pss_kb "$pid"))); rss=$((rss + $(rss_kb "$pid"))); n=$((n + 1))
    for child in $(descendants "$pid"); do
      [[ $(tr '\0' ' ' <"/proc/$child/cmdline" 2>/dev/null) == *__run* ]] || continue
      runner_pss=$((runner_pss + $(pss_kb "$child"))); rss=$((rss + $(rss_kb "$child"))); n=$((n + 1))
    done
  done
  echo "$shim_pss $runner_pss $((shim_pss + runner_pss)) $rss $n"
}
sleep 1
read -r mem_fresh_shim mem_fresh_runner mem_fresh_pss mem_fresh_rss mem_procs < <(pod_memory)

if ((have_wasmtime)); then
  # Default settings, as a user would run it; -Scli gives the guest its stderr.
  ip netns exec "$netns" "$wasmtime" serve -Scli --addr "127.0.0.1:$wasmtime_port" "$hello_wasm" \
    >"$http_tmp/wasmtime-serve.out" 2>"$wasmtime_log" &
  wasmtime_pid=$!
  wait_http "$wasmtime_port" "$wasmtime_pid" "wasmtime serve"
fi

# wrk --latency output -> JSON {rps, p50_ms, p99_ms, requests, non_2xx, socket_errors}.
to_ms() { awk -v v="$1" 'BEGIN {
  n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
  if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
  printf "%.3f", n }'; }
run_wrk() { # port label -> JSON on stdout, wrk output kept in $http_tmp
  local out="$http_tmp/wrk-$2.txt"
  if [[ $warmup != 0 ]]; then
    in_ns wrk -t"$threads" -c"$connections" -d"$warmup" "http://127.0.0.1:$1/" >"$http_tmp/warm-$2.txt"
  fi
  in_ns wrk -t"$threads" -c"$connections" -d"$duration" --latency "http://127.0.0.1:$1/" >"$out"
  local rps p50 p99 requests non2xx errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2; exit}' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2; exit}' "$out")")
  requests=$(awk '/requests in/ {print $1; exit}' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF; exit}' "$out")
  errors=$(awk '/Socket errors:/ {s = 0; for (i = 3; i <= NF; i += 2) s += $(i + 1); print s; exit}' "$out")
  jq -n --argjson rps "${rps:-0}" --argjson p50 "$p50" --argjson p99 "$p99" \
    --argjson requests "${requests:-0}" --argjson non2xx "${non2xx:-0}" --argjson errors "${errors:-0}" \
    '{rps: $rps, p50_ms: $p50, p99_ms: $p99, requests: $requests, non_2xx: $non2xx, socket_errors: $errors}'
}

echo "http bench: wrk -t$threads -c$connections -d$duration (warm-up $warmup each), $rounds round(s); load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
wasmpod_runs=()
wasmtime_runs=()
for round in $(seq "$rounds"); do
  order="wasmpod wasmtime"
  ((round % 2 == 0)) && order="wasmtime wasmpod"
  for who in $order; do
    case $who in
      wasmpod)
        wasmpod_runs+=("$(run_wrk "$wasmpod_port" "wasmpod-$round")")
        echo "  round $round wasmpod:        $(jq -c . <<<"${wasmpod_runs[-1]}")";;
      wasmtime)
        ((have_wasmtime)) || continue
        wasmtime_runs+=("$(run_wrk "$wasmtime_port" "wasmtime-$round")")
        echo "  round $round wasmtime serve: $(jq -c . <<<"${wasmtime_runs[-1]}")";;
    esac
  done
done

# Idle again: the memory of the pod after serving.
sleep 2
read -r mem_idle_shim mem_idle_runner mem_idle_pss mem_idle_rss _ < <(pod_memory)
wasmtime_pss=null
if ((have_wasmtime)); then wasmtime_pss=$(pss_kb "$wasmtime_pid"); fi

# Output kept: lines the guest wrote vs. the requests wrk counted as answered (warm-ups
# included); the readiness probes and requests still in flight when wrk stopped are not
# counted by wrk, so every line kept means lines >= that count.
total_requests() { # server
  find "$http_tmp" -maxdepth 1 \( -name "wrk-$1-*.txt" -o -name "warm-$1-*.txt" \) -print0 \
    | xargs -0 -r cat | awk '/requests in/ {s += $1} END {print s + 0}'
}
# Lines exactly as the guest wrote them ("hello: GET /"; wasmtime serve prefixes
# "stderr [N] :: "), and every request's line counted by its first piece "hello: " (the
# guest's eprintln is several writes, so concurrent requests can tear lines in both servers).
wasmpod_lines=$(grep -c '^hello: GET /$' "$wasmpod_log" || true)
wasmpod_occurrences=$(grep -o 'hello: ' "$wasmpod_log" | wc -l)
wasmtime_lines=0 wasmtime_occurrences=0
if ((have_wasmtime)); then
  wasmtime_lines=$(grep -c '^stderr \[[0-9]*\] :: hello: GET /$' "$wasmtime_log" || true)
  wasmtime_occurrences=$(grep -o 'hello: ' "$wasmtime_log" | wc -l)
fi
if [[ -n ${HTTP_BENCH_KEEP_LOGS:-} ]]; then
  mkdir -p "$HTTP_BENCH_KEEP_LOGS"
  cp "$http_tmp"/*.log "$http_tmp"/*.txt "$HTTP_BENCH_KEEP_LOGS"/
fi
wasmpod_measured=$(total_requests wasmpod)
wasmtime_measured=$(total_requests wasmtime)

median() { # jq path, JSON values on stdin
  jq -s "map($1) | sort | .[(length - 1) / 2 | floor]"
}
summary() { # JSON runs as args
  if (($# == 0)); then echo null; return; fi
  local runs
  runs=$(printf '%s\n' "$@")
  jq -n --argjson rps "$(median .rps <<<"$runs")" --argjson p50 "$(median .p50_ms <<<"$runs")" \
    --argjson p99 "$(median .p99_ms <<<"$runs")" --argjson all "$(jq -s . <<<"$runs")" \
    '{rps: $rps, p50_ms: $p50, p99_ms: $p99, runs: $all}'
}
wasmpod_summary=$(summary "${wasmpod_runs[@]}")
wasmtime_summary=$(summary "${wasmtime_runs[@]+"${wasmtime_runs[@]}"}")

out_dir="$CARGO_TARGET_DIR/bench"
mkdir -p "$out_dir"
out="$out_dir/http.json"
jq -n --argjson wasmpod "$wasmpod_summary" --argjson wasmtime "$wasmtime_summary" \
  --arg duration "$duration" --argjson connections "$connections" --argjson threads "$threads" \
  --arg warmup "$warmup" --argjson rounds "$rounds" --arg loadavg "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --argjson cores "$(nproc)" --arg wasmtime_version "$( ((have_wasmtime)) && "$wasmtime" --version || echo none)" \
  --argjson wasmpod_lines "$wasmpod_lines" --argjson wasmpod_measured "$wasmpod_measured" \
  --argjson wasmtime_lines "$wasmtime_lines" --argjson wasmtime_measured "$wasmtime_measured" \
  --argjson wasmpod_occ "$wasmpod_occurrences" --argjson wasmtime_occ "$wasmtime_occurrences" \
  --argjson fresh "[$mem_fresh_shim, $mem_fresh_runner, $mem_fresh_pss, $mem_fresh_rss]" \
  --argjson idle "[$mem_idle_shim, $mem_idle_runner, $mem_idle_pss, $mem_idle_rss]" \
  --argjson procs "$mem_procs" --argjson wasmtime_pss "$wasmtime_pss" \
  --arg date "$(date -Is)" '
  {date: $date, machine: {cores: $cores, loadavg_at_end: $loadavg},
   wrk: {threads: $threads, connections: $connections, duration: $duration, warmup: $warmup, rounds: $rounds},
   wasmtime_version: $wasmtime_version,
   wasmpod: $wasmpod, wasmtime_serve: $wasmtime,
   ratio: (if $wasmtime == null then null else
     {rps: ($wasmpod.rps / $wasmtime.rps), p50: ($wasmpod.p50_ms / $wasmtime.p50_ms),
      p99: ($wasmpod.p99_ms / $wasmtime.p99_ms)} end),
   output_kept: {wasmpod_stderr_lines: $wasmpod_lines, wasmpod_stderr_occurrences: $wasmpod_occ,
     wasmpod_requests_measured_and_warmup: $wasmpod_measured,
     wasmtime_serve_stderr_lines: $wasmtime_lines, wasmtime_serve_stderr_occurrences: $wasmtime_occ,
     wasmtime_serve_requests_measured_and_warmup: $wasmtime_measured},
   memory_kb: {processes: $procs,
     fresh: {shim_pss: $fresh[0], runner_pss: $fresh[1], pss: $fresh[2], rss: $fresh[3]},
     idle_after_load: {shim_pss: $idle[0], runner_pss: $idle[1], pss: $idle[2], rss: $idle[3]},
     wasmtime_serve_idle_pss: $wasmtime_pss}}' >"$out"

jq -r '
  def f(x; d): if x == null then "n/a" else (x * pow(10; d) | round) / pow(10; d) | tostring end;
  "",
  "wasi:http hello handler, wrk -t\(.wrk.threads) -c\(.wrk.connections) -d\(.wrk.duration) (median of \(.wrk.rounds) round(s))",
  "                        wasmpod   wasmtime serve   ratio",
  "requests/s       \(f(.wasmpod.rps; 0) | " " * (14 - length) + .)   \(f(.wasmtime_serve.rps; 0) | " " * (14 - length) + .)   \(f(.ratio.rps; 2))",
  "p50 latency ms   \(f(.wasmpod.p50_ms; 2) | " " * (14 - length) + .)   \(f(.wasmtime_serve.p50_ms; 2) | " " * (14 - length) + .)   \(f(.ratio.p50; 2))",
  "p99 latency ms   \(f(.wasmpod.p99_ms; 2) | " " * (14 - length) + .)   \(f(.wasmtime_serve.p99_ms; 2) | " " * (14 - length) + .)   \(f(.ratio.p99; 2))",
  "stderr lines     \(.output_kept.wasmpod_stderr_lines | tostring | " " * (14 - length) + .)   \(.output_kept.wasmtime_serve_stderr_lines | tostring | " " * (14 - length) + .)   (intact, not torn)",
  "  text found     \(.output_kept.wasmpod_stderr_occurrences | tostring | " " * (14 - length) + .)   \(.output_kept.wasmtime_serve_stderr_occurrences | tostring | " " * (14 - length) + .)   (\"hello: \" anywhere: lines kept)",
  "  wrk requests   \(.output_kept.wasmpod_requests_measured_and_warmup | tostring | " " * (14 - length) + .)   \(.output_kept.wasmtime_serve_requests_measured_and_warmup | tostring | " " * (14 - length) + .)   (warm-up included; probes not)",
  "idle pod memory: PSS \(.memory_kb.idle_after_load.pss) kB after the run (shim \(.memory_kb.idle_after_load.shim_pss) + runner \(.memory_kb.idle_after_load.runner_pss)), \(.memory_kb.fresh.pss) kB fresh; wasmtime serve idle PSS \(.memory_kb.wasmtime_serve_idle_pss // "n/a") kB",
  "machine: \(.machine.cores) cores, load average \(.machine.loadavg_at_end) (other work running)"
' "$out"
echo "http bench: JSON in $out; done in $(($(date +%s) - began)) s"
