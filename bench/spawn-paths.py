#!/usr/bin/env python3
"""Spawn paths for a container process, measured side by side (issue 4).

Each round starts the shim binary as a runner (`containerd-shim-wasmpod-v1 __run {}`: it
starts, fails to parse the empty request and writes its status line on fd 3) in a fresh
cgroup, and times fork/clone -> status line. The ways to get the process into its cgroup:

  no cgroup       fork + exec, nothing else (the floor)
  v1 procs write  fork, child writes 0 to cgroup.procs of 4 v1 controllers, exec
  v2 procs write  the same on the cgroup v2 hierarchy
  v2 clone3       clone3(CLONE_INTO_CGROUP): created inside the v2 cgroup (what the shim does)
  fork, no exec   fork and report, no exec (what a fork server would save at best)

Rounds are interleaved with 50 ms pauses, as sparse pod starts are. Python's own fork is
slower than the shim's, so compare rows with each other, not with the shim's log.

  python3 bench/spawn-paths.py SHIM_BINARY [ROUNDS] [JSON_OUT]      (root)
"""

import ctypes
import json
import os
import statistics
import struct
import sys
import time

SHIM = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
OUT = sys.argv[3] if len(sys.argv) > 3 else None
ROOT = "/sys/fs/cgroup"
V1 = ["memory", "cpu", "cpuacct", "pids"]
CLONE_INTO_CGROUP = 0x200000000
SYS_CLONE3 = 435
libc = ctypes.CDLL(None, use_errno=True)


def v2_root():
    for root in (ROOT, f"{ROOT}/unified"):
        if os.path.exists(f"{root}/cgroup.subtree_control"):
            return root
    return None


def v1_roots():
    return [f"{ROOT}/{c}" for c in V1 if os.path.exists(f"{ROOT}/{c}/tasks")]


def make_cgroups(mode, name):
    roots = {"v1 procs write": v1_roots(), "v2 procs write": [v2_root()],
             "v2 clone3": [v2_root()]}.get(mode, [])
    dirs = [f"{root}/{name}" for root in roots]
    for d in dirs:
        os.mkdir(d)
    return dirs


def clone3_into(dir_fd):
    args = struct.pack("11Q", CLONE_INTO_CGROUP, 0, 0, 0, 17, 0, 0, 0, 0, 0, dir_fd)
    buf = ctypes.create_string_buffer(args)
    pid = libc.syscall(SYS_CLONE3, buf, len(args))
    if pid < 0:
        raise OSError(ctypes.get_errno(), "clone3")
    return pid


def spawn_once(mode, name):
    dirs = make_cgroups(mode, name)
    procs = [os.open(f"{d}/cgroup.procs", os.O_WRONLY) for d in dirs] if mode != "v2 clone3" else []
    dir_fd = os.open(dirs[0], os.O_RDONLY | os.O_DIRECTORY) if mode == "v2 clone3" else -1
    r, w = os.pipe()
    began = time.perf_counter()
    pid = clone3_into(dir_fd) if mode == "v2 clone3" else os.fork()
    if pid == 0:
        try:
            for fd in procs:
                os.write(fd, b"0")
            os.dup2(w, 3)
            os.dup2(w, 4)
            if mode == "fork, no exec":
                os.write(3, b"x")
                os._exit(0)
            os.execv(SHIM, ["containerd-shim-wasmpod-v1", "__run", "{}"])
        finally:
            os._exit(127)
    os.close(w)
    while os.read(r, 4096):
        pass
    elapsed = (time.perf_counter() - began) * 1000
    os.close(r)
    for fd in procs:
        os.close(fd)
    if dir_fd >= 0:
        os.close(dir_fd)
    os.waitpid(pid, 0)
    for d in dirs:
        os.rmdir(d)
    return elapsed


def main():
    modes = ["no cgroup", "v1 procs write", "v2 procs write", "v2 clone3", "fork, no exec"]
    if not v1_roots():
        modes.remove("v1 procs write")
    if not v2_root():
        modes = [m for m in modes if not m.startswith("v2")]
    samples = {m: [] for m in modes}
    for i in range(ROUNDS):
        for mode in modes:
            time.sleep(0.05)
            samples[mode].append(spawn_once(mode, f"wasmpod-spawn-bench-{os.getpid()}-{i}"))
    floor = statistics.median(samples["no cgroup"])
    print(f"spawn paths, {ROUNDS} interleaved rounds: fork/clone -> runner's first status line")
    print(f"| {'path':16} | median ms | min ms | max ms | vs no cgroup |")
    print(f"| {'-' * 16} | --------- | ------ | ------ | ------------ |")
    rows = []
    for mode in modes:
        s = samples[mode]
        med = statistics.median(s)
        rows.append({"path": mode, "median_ms": med, "min_ms": min(s), "max_ms": max(s),
                     "ratio": med / floor, "samples_ms": s})
        print(f"| {mode:16} | {med:9.2f} | {min(s):6.2f} | {max(s):6.2f} | {med / floor:11.2f}x |")
    if OUT:
        with open(OUT, "w") as f:
            json.dump({"rounds": ROUNDS, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
