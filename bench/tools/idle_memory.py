"""Where the memory of idle WebSockets goes on chanlite's server: a tracemalloc diff.

    .venv/bin/python bench/tools/idle_memory.py [--conns 2000] [--no-deflate]

Serves ``bench/apps/chanlite_app.py`` in this process with tracemalloc on, opens --conns
idle connections with ``bench/out/wsload idle`` and prints the allocation sites that grew,
per connection.  Python allocations only: the kernel's socket buffers and uvloop's C
structures show up in RSS (the idle scenario in scenarios.py), not here.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH / "apps"))


async def main(conns: int, deflate: bool, top: int) -> None:
    from chanlite_app import app

    from chanlite.server.config import Config
    from chanlite.server.main import Server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(Config(app, port=port, access_log=False, ws_per_message_deflate=deflate))
    task = asyncio.create_task(server.serve())
    await server.started.wait()
    argv = [str(BENCH / "out" / "wsload"), "idle", "--port", str(port), "--conns", "20"]
    warm = await asyncio.create_subprocess_exec(*argv, "--hold", "0.5", stdout=subprocess.DEVNULL)
    await warm.wait()
    await asyncio.sleep(0.5)
    tracemalloc.start(8)
    before = tracemalloc.take_snapshot()
    argv[-1] = str(conns)
    client = await asyncio.create_subprocess_exec(
        *argv, "--hold", "60", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert client.stdout is not None and client.stdin is not None
    ready = await client.stdout.readline()
    await asyncio.sleep(1.0)
    after = tracemalloc.take_snapshot()
    print(ready.decode().strip())
    stats = after.compare_to(before, "lineno")
    grown = sum(s.size_diff for s in stats)
    print(f"Python heap grew {grown / conns / 1024:.2f} KiB per connection; top sites:")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        print(
            f"{stat.size_diff / conns:9.0f} B/conn {stat.count_diff / conns:6.2f} blocks/conn"
            f"  {frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        )
    client.stdin.close()
    await client.wait()
    server.should_exit = True
    await task


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--no-deflate", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    opts = parser.parse_args()
    asyncio.run(main(opts.conns, not opts.no_deflate, opts.top))
