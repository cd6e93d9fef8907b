"""Topics on the Phoenix protocol against plain sockets, on a real `chanlite run`.

    .venv/bin/python bench/topics.py                          # everything, ~20 minutes
    .venv/bin/python bench/topics.py --only broadcast,channels,memory,resume

* ``broadcast``: one publisher, 1,000 subscribers. The topic path (a push whose handler
  calls ``channel.broadcast``: every subscriber gets ``[null,null,"room:1","msg",{...}]``)
  against ``app.broadcast`` to a group of plain sockets (``/ws/pub`` -> ``/ws/sub``),
  the same JSON payload. Deliveries per CPU-second of the server process (utime + stime
  from /proc), median of rounds that alternate the two; the ratio is the topic path's
  share. One process, memory layer; ``--workers 2`` on SQLite with ``--layer``.
* ``channels``: the same topic broadcast on the Redis layer against Django Channels +
  channels_redis on uvicorn (bench/apps/channels_topics_app.py: a consumer that answers
  joins and turns a ``pub`` push into ``group_send``, one handler call per member), one
  process and 2 workers each; needs bench/.venv (bench/run.sh builds it) and redis-server.
* ``memory``: the server's RSS growth per connection at 5,000 connections, each joined to
  10 topics, against 5,000 plain sockets each in one group.
* ``resume``: a connection joins a history topic with ``since`` 100 messages back; time
  from sending the join to the 100th replayed message, p50/p99.

The server is pinned to CPU 0 and this client to CPU 1 (taskset), as in bench/run.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

REPO = Path(__file__).resolve().parents[1]
CHANLITE = Path(sys.executable).parent / "chanlite"
BANNER = re.compile(r"http://127\.0\.0\.1:(\d+)")
PAYLOAD = {"body": "x" * 64, "n": 0}
TICKS = os.sysconf("SC_CLK_TCK")
BATCH = 10


class Server:
    """`chanlite run` of the bench app with *args*, or another server's *command*."""

    def __init__(
        self, *args: str, command: list[str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.args = args
        self.command = command
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Server:
        cmd = ["taskset", "-c", "0"]
        if self.command is None:
            cmd += [str(CHANLITE), "run", "bench/apps/topics_app.py:app", "--port", "0"]
            cmd += ["--no-access-log", "--log-level", "warning", *self.args]
        else:
            self.port = free_port()
            cmd += [part.replace("{port}", str(self.port)) for part in self.command]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.log.seek(0)
            text = self.log.read().decode(errors="replace")
            found = BANNER.search(text) if self.command is None else None
            if found:
                self.port = int(found.group(1))
            if self.port and _listening(self.port):
                time.sleep(1.0)  # workers importing the app
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{text}")
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: Any) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)

    def pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def cpu(self) -> float:
        total = 0
        for pid in self.pids():
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / TICKS

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def frame(join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> str:
    return json.dumps([join_ref, ref, topic, event, payload])


async def topic_socket(port: int, topics: list[str], **params: Any) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0",
                                  max_queue=None, compression=None, ping_interval=None)  # fmt: skip
    for i, topic in enumerate(topics):
        await ws.send(frame(str(i), str(i), topic, "phx_join", params))
    for _ in topics:
        reply = json.loads(await ws.recv())
        assert reply[4]["status"] == "ok", reply
    return ws


async def plain_socket(port: int) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/sub", max_queue=None,
                                  compression=None, ping_interval=None)  # fmt: skip
    assert await ws.recv() == "joined"
    return ws


async def count(ws: Any, expected: int, done: list[int]) -> None:
    """Read *expected* messages, adding one to ``done[0]`` for each."""
    for _ in range(expected):
        await ws.recv()
        done[0] += 1


async def fanout(
    server: Server,
    kind: str,
    subscribers: list[Any],
    publisher: Any,
    messages: int,
    label: str = "",
) -> float:
    """Deliveries per server CPU-second. A server that drops (a peer's full channels) is
    charged the CPU it spent until nothing more arrived for 3 s."""
    done = [0]
    readers = [asyncio.ensure_future(count(ws, messages, done)) for ws in subscribers]
    await asyncio.sleep(0.2)
    start = server.cpu()
    # Batches of 10 messages, the next one sent when the last has arrived everywhere (or
    # nothing more came for 3 s): a server is measured at its pace, never overrun into
    # dropping. The topic publisher sends without a ref, so no replies are in the way.
    for first in range(0, messages, BATCH):
        for n in range(first, min(first + BATCH, messages)):
            payload = {**PAYLOAD, "n": n}
            if kind == "topic":
                await publisher.send(frame("0", None, "room:1", "pub", payload))
            else:
                await publisher.send(json.dumps(payload))
        expected = len(subscribers) * min(first + BATCH, messages)
        seen, quiet = -1, time.monotonic()
        while done[0] < expected and time.monotonic() - quiet < 3.0:
            if done[0] != seen:
                seen, quiet = done[0], time.monotonic()
            await asyncio.sleep(0.002)
    expected = len(subscribers) * messages
    used = server.cpu() - start
    for reader in readers:
        reader.cancel()
    if done[0] < expected:
        lost = expected - done[0]
        print(f"  ({label or kind}: {lost:,} of {expected:,} deliveries never arrived)")
        server.log.seek(0)
        logged = server.log.read().decode(errors="replace").splitlines()
        errors = [line for line in logged if line and not line[0].isspace()]
        if errors:
            print(f"  (its server's log ends with: {errors[-1]})")
    return done[0] / max(used, 1e-3)


async def run_broadcast(args: argparse.Namespace, extra: tuple[str, ...]) -> dict[str, Any]:
    subs = args.subscribers
    with Server(*extra) as server:
        port = server.port
        topic_subs = [await topic_socket(port, ["room:1"]) for _ in range(subs)]
        plain_subs = [await plain_socket(port) for _ in range(subs)]
        topic_pub = await topic_socket(port, ["room:p"])
        await topic_pub.send(frame("0", "0", "room:1", "phx_join", {}))
        json.loads(await topic_pub.recv())
        # the publisher's own copy arrives too: read it away
        topic_pub_drain = asyncio.ensure_future(count(topic_pub, 10**9, [0]))
        plain_pub = await websockets.connect(f"ws://127.0.0.1:{port}/ws/pub", compression=None)
        rates: dict[str, list[float]] = {"topic": [], "plain": []}
        for _ in range(args.rounds):
            for kind in ("plain", "topic"):
                pub = topic_pub if kind == "topic" else plain_pub
                group = topic_subs if kind == "topic" else plain_subs
                rates[kind].append(await fanout(server, kind, group, pub, args.messages))
        topic_pub_drain.cancel()
        for ws in [*topic_subs, *plain_subs, topic_pub, plain_pub]:
            await ws.close()
    topic, plain = statistics.median(rates["topic"]), statistics.median(rates["plain"])
    return {"topic": topic, "plain": plain, "ratio": topic / plain, "rounds": rates}


async def run_topic_fanout(server: Server, args: argparse.Namespace, label: str) -> float:
    """Topic broadcast only (no plain sockets): deliveries per server CPU-second."""
    port = server.port
    subs = [await topic_socket(port, ["room:1"]) for _ in range(args.subscribers)]
    pub = await topic_socket(port, ["room:1"])
    drain = asyncio.ensure_future(count(pub, 10**9, [0]))
    rates = [
        await fanout(server, "topic", subs, pub, args.messages, label) for _ in range(args.rounds)
    ]
    drain.cancel()
    for ws in [*subs, pub]:
        await ws.close()
    return statistics.median(rates)


def run_channels(args: argparse.Namespace, workers: int) -> dict[str, float]:
    """chanlite topics (and app.broadcast) on the Redis layer against Channels +
    channels_redis on uvicorn, each with *workers* processes, each publishing through a
    push handler: both pay the layer's round trip."""
    peers = REPO / "bench" / ".venv" / "bin"
    redis_port = free_port()
    redis = subprocess.Popen(
        ["taskset", "-c", "1", "redis-server", "--port", str(redis_port), "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not _listening(redis_port):
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{redis_port}/0"
        result = {}
        ours = asyncio.run(run_broadcast(args, ("--layer", url, "--workers", str(workers))))
        result["chanlite"], result["plain"] = ours["topic"], ours["plain"]
        uvicorn = [
            str(peers / "uvicorn"),
            "channels_topics_app:application",
            "--app-dir",
            "bench/apps",
            "--workers",
            str(workers),
        ]
        uvicorn += ["--port", "{port}", "--loop", "uvloop", "--http", "httptools"]
        uvicorn += ["--ws", "websockets-sansio", "--no-access-log", "--log-level", "warning"]
        with Server(command=uvicorn, env={"BENCH_CHANNEL_LAYER": url}) as server:
            result["channels"] = asyncio.run(run_topic_fanout(server, args, "Channels"))
        return result
    finally:
        redis.terminate()
        redis.wait(10)


async def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kind in ("plain", "topics"):
        with Server() as server:
            sockets = []
            await asyncio.sleep(0.5)
            before = server.rss()
            for i in range(args.connections):
                if kind == "topics":
                    topics = [f"room:{(i + k) % 500}" for k in range(10)]
                    sockets.append(await topic_socket(server.port, topics))
                else:
                    sockets.append(await plain_socket(server.port))
            await asyncio.sleep(1.0)
            after = server.rss()
            result[kind] = (after - before) / args.connections
            for ws in sockets:
                await ws.close()
    return result


async def run_resume(args: argparse.Namespace, extra: tuple[str, ...]) -> dict[str, Any]:
    with Server(*extra) as server:
        pub = await topic_socket(server.port, ["hist:1"])
        reader = await topic_socket(server.port, [])
        samples: list[float] = []
        join_ref = 100
        last = ""
        for _round in range(args.resumes):
            for n in range(100):
                await pub.send(frame("0", str(n + 10), "hist:1", "pub", {**PAYLOAD, "n": n}))
            for _ in range(200):  # 100 broadcasts (its own copies) and 100 replies
                message = json.loads(await pub.recv())
                if message[3] == "msg":
                    last = message[1]  # "<offset>:<epoch>"
            offset, epoch = last.split(":", 1)
            since = f"{int(offset) - 100}:{epoch}"
            join_ref += 1
            start = time.perf_counter()
            await reader.send(
                frame(str(join_ref), str(join_ref), "hist:1", "phx_join", {"since": since})
            )
            replayed = 0
            while replayed < 100:
                message = json.loads(await reader.recv())
                if message[3] == "phx_reply":
                    assert message[4]["response"]["history"]["recovered"], message
                elif message[3] == "msg":
                    replayed += 1
            samples.append(time.perf_counter() - start)
            await reader.send(frame(str(join_ref), "l", "hist:1", "phx_leave", {}))
            while json.loads(await reader.recv())[3] != "phx_close":
                pass
        ms = sorted(s * 1000 for s in samples)
        return {
            "p50_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
            "n": len(ms),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="broadcast,channels,memory,resume")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--resumes", type=int, default=200)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {1})
    only = set(args.only.split(","))
    if "broadcast" in only:
        r = asyncio.run(run_broadcast(args, ()))
        print(f"broadcast to {args.subscribers}, one process: topic {r['topic']:,.0f} vs "
              f"app.broadcast {r['plain']:,.0f} deliveries/CPU-s = {r['ratio']:.0%}")  # fmt: skip
        db = tempfile.mktemp(suffix=".db")
        r = asyncio.run(run_broadcast(args, ("--workers", "2", "--layer", f"sqlite:///{db}")))
        print(f"broadcast to {args.subscribers}, 2 workers on SQLite: topic {r['topic']:,.0f} vs "
              f"app.broadcast {r['plain']:,.0f} deliveries/CPU-s = {r['ratio']:.0%}")  # fmt: skip
    if "channels" in only:
        for workers in (1, 2):
            r = run_channels(args, workers)
            print(f"broadcast to {args.subscribers}, {workers} worker(s) on Redis: chanlite topics "
                  f"{r['chanlite']:,.0f} (app.broadcast {r['plain']:,.0f}) vs Channels + "
                  f"channels_redis {r['channels']:,.0f} deliveries/CPU-s = "
                  f"{r['chanlite'] / r['channels']:.1f}x")  # fmt: skip
    if "memory" in only:
        r = asyncio.run(run_memory(args))
        topics, plain = r["topics"] / 1024, r["plain"] / 1024
        print(f"memory per connection at {args.connections}: 10 topics {topics:.1f} KiB, "
              f"plain socket in one group {plain:.1f} KiB")  # fmt: skip
    if "resume" in only:
        r = asyncio.run(run_resume(args, ()))
        print(f"join with a 100-message resume (memory layer): p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms (n={r['n']})")  # fmt: skip
        db = tempfile.mktemp(suffix=".db")
        r = asyncio.run(run_resume(args, ("--layer", f"sqlite:///{db}")))
        print(f"join with a 100-message resume (SQLite layer): p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms (n={r['n']})")  # fmt: skip


if __name__ == "__main__":
    main()
