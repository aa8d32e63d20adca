# Sourced by demo.sh, measure-start.sh, bench/bench.sh and bench/http.sh: starts a private
# containerd with $shim_dir first on its PATH through the test harness's own launcher
# (`private-containerd`, test/src/bin/private-containerd.rs: own root, state, socket and
# config under a temp dir, never the system one), and on exit has it stop containerd, kill
# its shims, unmount and remove everything.
# Needs: $shim_dir (a cargo `debug` or `release` dir: the launcher is built in the same
# profile). Optional: $containerd_log_level (default info; at debug containerd passes -debug
# to its shims and copies their logs into $work/containerd.log).
# Sets: $work, $sock, $ns, $containerd_pid; defines `cleanup` (the EXIT/INT/TERM trap; it
# keeps the exit status it finds in $? and exits with it).
harness_profile=debug
[[ ${shim_dir%/} == */release ]] && harness_profile=release
cargo build -q --profile "${harness_profile/debug/dev}" -p wasmpod-test --bin private-containerd
harness_pid=""
work=""
cleanup() {
  local status=$?
  set +e
  if ((status != 0)) && [[ -f $work/containerd.log ]]; then
    echo "failed; containerd log tail:" >&2
    tail -n 30 "$work/containerd.log" >&2
  fi
  if [[ -n $harness_pid ]]; then
    kill -TERM "$harness_pid" 2>/dev/null
    wait "$harness_pid" 2>/dev/null
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM

coproc harness {
  exec "$CARGO_TARGET_DIR/$harness_profile/private-containerd" --shim "$shim_dir/containerd-shim-wasmpod-v1" \
    --log-level "${containerd_log_level:-info}"
}
harness_pid=$harness_PID
line=""
while read -r line <&"${harness[0]}"; do
  case $line in
    work=* | sock=* | ns=* | containerd_pid=*) declare "$line" ;;
    ready) break ;;
  esac
done
[[ $line == ready ]] || { echo "the private containerd did not start" >&2; exit 1; }
echo "started a private containerd in $work"
