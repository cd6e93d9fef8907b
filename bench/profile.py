"""Profile one server under one scenario's load with py-spy, and print where the time goes.

    bash bench/run.sh profile echo                       # chanlite on its built-in server
    bash bench/run.sh profile broadcast1000 --server starlette-uvicorn --seconds 8

The load runs from CPU 1 as in scenarios.py, py-spy samples the server (``--nonblocking``, so
the server is not paused) and writes collapsed stacks to ``bench/out/profile-*.txt``; the
summary lists the functions with the most samples on top of the stack (self) and anywhere
in it (inclusive).  Load ``--format speedscope`` output into https://speedscope.app for a
flame graph.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench

LOADS = {
    "echo": lambda port, secs: bench.wsload(
        "echo", port, "--warmup", "1", "--duration", str(secs), timeout=secs + 60
    ),
    "broadcast200": lambda port, secs: bench.wsload(
        "bcast", port, "--conns", "200", "--warmup", "1", "--duration", str(secs),
        timeout=secs + 60,
    ),
    "broadcast1000": lambda port, secs: bench.wsload(
        "bcast", port, "--conns", "1000", "--warmup", "1", "--duration", str(secs),
        timeout=secs + 60,
    ),
    "handshake": lambda port, secs: bench.wsload(
        "hs", port, "--warmup", "1", "--duration", str(secs), timeout=secs + 60
    ),
    "http": lambda port, secs: bench._wrk(port, secs),
}  # fmt: skip


def summarize(collapsed: Path, top: int) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples (is the server idle, or py-spy not permitted to read it?)"
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenario", choices=sorted(LOADS))
    parser.add_argument("--server", default="chanlite", choices=sorted(bench.SERVERS))
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--format", default="raw", choices=["raw", "speedscope", "flamegraph"])
    opts = parser.parse_args()

    bench.OUT.mkdir(exist_ok=True)
    bench._probe_chanlite_flags()
    server = bench.SERVERS[opts.server]
    port = bench.free_port()
    suffix = {"raw": "txt", "speedscope": "json", "flamegraph": "svg"}[opts.format]
    out = bench.OUT / f"profile-{opts.scenario}-{opts.server}.{suffix}"
    with bench.running(server, port) as pid:
        result: dict[str, object] = {}
        load = threading.Thread(
            target=lambda: result.update(LOADS[opts.scenario](port, opts.seconds + 2))
        )
        load.start()
        # Start sampling after the load's warm-up, stop before it ends.
        threading.Event().wait(1.5)
        pyspy = [str(bench.PEER_BIN / "py-spy"), "record", "--pid", str(pid), "--nonblocking"]
        pyspy += ["--subprocesses", "--function", "--rate", str(opts.rate)]
        pyspy += ["--duration", str(int(opts.seconds)), "--format", opts.format, "-o", str(out)]
        done = subprocess.run(pyspy, capture_output=True, text=True, check=False)
        load.join()
    if done.returncode:
        print(done.stderr.strip(), file=sys.stderr)
        return 1
    print(f"load: {bench._summary(result)}")
    print(f"profile: {out}")
    if opts.format == "raw":
        print(summarize(out, opts.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
