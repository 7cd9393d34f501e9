"""Control group join benchmark: how long a job's first process takes to be inside its
control group, from the fork to the last join, the old way against the spawner's.

    .venv/bin/python -m bench.join [--runs 100] [--gap 0.1]

As root. Each round makes a job's group (`Containment.create`, as a start does), forks a
child that joins it, and removes it. `procs`: os.fork, then the child writes its pid to
every cgroup.procs file (as the spawner did until issue 15's benchmark); `spawner`: the
spawner's `_fork` and `_join` (clone3 into the v2 group, 0 to each v1 `tasks`). The two
alternate, `--gap` seconds apart (the queue benchmark starts a job every ~0.1 s), so the
machine's load weighs on both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from claude_batch_server.cgroups.base import Limits, root_name
from claude_batch_server.jobs import spawner
from claude_batch_server.jobs.containment import Containment


def by_procs(procs: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        for path in procs:
            with open(path, "w") as group:
                group.write(str(os.getpid()))
    return pid


def by_spawner(procs: list[str]) -> int:
    pid, joined = spawner._fork(procs)
    if pid == 0:
        spawner._join(procs, joined)
    return pid


def round_trip(containment: Containment, fork: Callable[[list[str]], int]) -> float:
    """Milliseconds from before the fork until the child is in every group."""
    procs = containment.create("bench")
    reader, writer = os.pipe()
    began = time.perf_counter()
    pid = fork(procs)
    if pid == 0:
        os.write(writer, struct.pack("d", time.perf_counter()))
        os._exit(0)
    os.close(writer)
    joined = struct.unpack("d", os.read(reader, 8))[0]
    os.close(reader)
    os.waitpid(pid, 0)
    containment.end("bench")
    return (joined - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        containment = Containment.for_host(root_name(Path(tmp)), Limits(0, 0, 4096))
        print(f"control groups: {containment.flavour.value}")
        samples: dict[str, list[float]] = {"procs": [], "spawner": []}
        try:
            for _ in range(args.runs):
                for name, fork in (("procs", by_procs), ("spawner", by_spawner)):
                    time.sleep(args.gap)
                    samples[name].append(round_trip(containment, fork))
        finally:
            containment.close()
    print("| join | runs | fork → in every group, median (ms) | p90 (ms) |")
    print("| --- | --- | --- | --- |")
    for name, found in samples.items():
        p90 = statistics.quantiles(found, n=10)[8]
        print(f"| {name} | {len(found)} | {statistics.median(found):.2f} | {p90:.2f} |")


if __name__ == "__main__":
    main()
