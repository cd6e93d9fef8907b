"""A Sentinel failover under two broadcasting chanlite processes.

Two real OS processes (``failover_peer.py``) broadcast to each other through a
Sentinel-managed master; the master is killed with SIGKILL mid-broadcast. Both must keep
delivering once the sentinels have promoted the replica, and every message the other sent
must be accounted for: delivered once, or counted in the layer's ``lost`` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from chanlite_redis import RedisLayer, RedisUnavailable

from chanlite.layers import HistoryGap, HistoryPolicy

pytestmark = pytest.mark.timeout(120)

PEER = Path(__file__).with_name("failover_peer.py")
WAIT = 30.0


class FailoverPeer:
    """One failover_peer.py process; its stdout events are collected as they come."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, url: str, prefix: str, name: str) -> FailoverPeer:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PEER),
            url,
            prefix,
            name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        peer = cls(name, process)
        await peer.wait_for(lambda e: e["event"] == "ready")
        return peer

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.events.append(json.loads(line))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, ready: Any, timeout: float = WAIT) -> dict[str, Any]:
        """The first event (in order) for which *ready* is true, waiting for it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if ready(event):
                    return event
            seen = len(self.events)
            assert not self._reader.done(), f"peer {self.name} exited"
            self._changed.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"peer {self.name}: timed out; last events {self.events[-3:]}"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def got(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "got"]

    async def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def finish(self) -> str:
        """Close its stdin and return what it logged."""
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        err = await asyncio.wait_for(self.process.stderr.read(), WAIT)
        await asyncio.wait_for(self.process.wait(), WAIT)
        await self._reader
        return err.decode()


async def test_broadcasts_survive_a_master_killed_mid_broadcast(
    own_sentinel_group: Any, prefix: str
) -> None:
    group = own_sentinel_group
    a = await FailoverPeer.start(group.url, prefix, "a")
    b = await FailoverPeer.start(group.url, prefix, "b")
    peers = (a, b)
    try:
        for peer in peers:
            await peer.wait_for(lambda e: e["event"] == "got" and e["n"] >= 50)
        killed_at = time.time()
        new_master = group.kill_master()
        # Both keep delivering: each hears messages the other sent after the kill.
        firsts = [
            await peer.wait_for(lambda e: e["event"] == "got" and e["at"] > killed_at)
            for peer in peers
        ]
        group.wait_failover(new_master)
        for peer, first in zip(peers, firsts, strict=True):
            await peer.wait_for(lambda e, n=first["n"]: e["event"] == "got" and e["n"] >= n + 50)
        lasts = {}
        for peer in peers:
            await peer.tell("stop")
            lasts[peer.name] = (await peer.wait_for(lambda e: e["event"] == "sent"))["last"]
        await a.tell(f"end {lasts['b']}")
        await b.tell(f"end {lasts['a']}")
        summaries = {p.name: await p.wait_for(lambda e: e["event"] == "summary") for p in peers}
    finally:
        logs = {peer.name: await peer.finish() for peer in peers}
    for peer, other in ((a, "b"), (b, "a")):
        received, lost = summaries[peer.name]["received"], summaries[peer.name]["lost"]
        log = logs[peer.name]
        assert len(received) == len(set(received)), f"{peer.name} got a message twice"
        # From the first message it heard (the other may have started sending before this
        # one joined), every message the other sent is delivered, or counted as lost.
        first = min(received)
        assert set(received) <= set(range(first, lasts[other] + 1))
        assert len(received) + lost == lasts[other] + 1 - first, (received, lost, lasts[other])
        if lost:
            assert "messages to group 'room' were not heard by this process" in log, log
        assert "Traceback" not in log, log
    # The failover was noticed: each process's pub/sub reconnected.
    assert all("Redis pub/sub" in logs[p.name] for p in peers), logs
    print(
        "first delivery after the kill, s:",
        [round(f["now"] - killed_at, 3) for f in firsts],
        "lost:",
        {n: s["lost"] for n, s in summaries.items()},
        "failed sends:",
        {p.name: sum(e["event"] == "failed" for e in p.events) for p in peers},
    )


async def test_a_history_group_starts_a_new_epoch_on_the_server_that_took_over(
    own_sentinel_group: Any, prefix: str
) -> None:
    # Replication is asynchronous: the last entries of a stream may not have reached the
    # replica. Offsets handed out again would pass a resume silently; a new epoch does not.
    layer = RedisLayer(
        own_sentinel_group.url, prefix=prefix, timeout=1.0, history={"news": HistoryPolicy(10)}
    )
    try:
        for n in range(3):
            await layer.group_send("news", {"type": "m", "n": n})
        before = await layer.stream_position("news")
        assert before.offset == 3
        own_sentinel_group.wait_failover(own_sentinel_group.kill_master())
        deadline = time.monotonic() + WAIT
        while True:
            try:
                await layer.group_send("news", {"type": "m", "n": 3})
                break
            except RedisUnavailable:
                assert time.monotonic() < deadline, "the layer never reached the new master"
                await asyncio.sleep(0.1)
        after = await layer.stream_position("news")
        assert after.epoch != before.epoch and after.offset == 1
        with pytest.raises(HistoryGap) as gap:
            await layer.history("news", since=before)
        assert gap.value.reason == "epoch"
        # Later sends stay in the new epoch.
        await layer.group_send("news", {"type": "m", "n": 4})
        page = await layer.history("news", since=after)
        assert [event["n"] for event in page.events] == [4]
    finally:
        await layer.close()
