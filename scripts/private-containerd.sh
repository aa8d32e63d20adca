# Sourced by demo.sh and measure-start.sh: starts a private containerd (own root, state,
# socket and config under a temp dir, never the system one) with $shim_dir first on its
# PATH, and stops it, kills its shims, unmounts and removes everything on exit.
# Needs: $shim_dir. Optional: $containerd_log_level (e.g. debug; containerd then passes
# -debug to its shims and copies their logs into $work/containerd.log). Sets: $work, $sock,
# $ns, $containerd_pid.
work=$(mktemp -d /tmp/wasmpod-XXXXXX)
containerd_pid=""
sock="$work/c.sock"
ns=${WASMPOD_NS:-wasmpod-$$}
cleanup() {
  local status=$?
  set +e
  if [[ -S $sock ]]; then
    for id in $(ctr -a "$sock" -n "$ns" containers ls -q 2>/dev/null); do
      ctr -a "$sock" -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1
      ctr -a "$sock" -n "$ns" tasks delete "$id" >/dev/null 2>&1
      ctr -a "$sock" -n "$ns" containers rm "$id" >/dev/null 2>&1
    done
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
    echo "failed; containerd log tail:" >&2
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

echo "starting a private containerd in $work"
PATH="$shim_dir:$PATH" containerd --config "$work/config.toml" \
  ${containerd_log_level:+--log-level "$containerd_log_level"} >"$work/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 200); do
  ctr -a "$sock" version >/dev/null 2>&1 && break
  kill -0 "$containerd_pid" 2>/dev/null || { echo "containerd exited" >&2; exit 1; }
  sleep 0.05
done
ctr -a "$sock" version >/dev/null
