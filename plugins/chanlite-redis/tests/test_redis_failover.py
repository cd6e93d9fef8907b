"""A Sentinel failover under two broadcasting chanlite processes.

Two real OS processes (``failover_peer.py``) broadcast to each other, and send to each
other's channel directly, through a Sentinel-managed master; the master is killed with
SIGKILL mid-broadcast. Both must keep delivering once the sentinels have promoted the
replica, and every message the other sent must be accounted for: delivered once, or
counted in the layer's ``lost`` and logged (or, for a direct send, refused as full).
That holds also for a sender that goes quiet right at the kill: the last messages Redis
acknowledged and then lost are revealed by its trailing markers, not by a later message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
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
        self.channel = ""
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
        peer.channel = (await peer.wait_for(lambda e: e["event"] == "ready"))["channel"]
        return peer

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.events.append(json.loads(line))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, ready: Any, timeout: float = WAIT, seen: int = 0) -> dict[str, Any]:
        """The first event (in order, from the *seen*-th on) for which *ready* is true,
        waiting for it."""
        deadline = time.monotonic() + timeout
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

    def refused_from(self, first: int) -> int:
        """Its direct sends numbered *first* or later that were refused (channel full)."""
        return sum(e["event"] == "full" and e["n"] >= first for e in self.events)

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


async def start_pair(url: str, prefix: str) -> tuple[FailoverPeer, FailoverPeer]:
    """Two peers broadcasting to each other and sending to each other's channel."""
    a = await FailoverPeer.start(url, prefix, "a")
    try:
        b = await FailoverPeer.start(url, prefix, "b")
    except BaseException:
        await a.finish()
        raise
    await a.tell(f"peer {b.channel}")
    await b.tell(f"peer {a.channel}")
    return a, b


class Accounts:
    """What each peer of a pair sent, received and counted as lost, once both stopped."""

    def __init__(self) -> None:
        self.lasts: dict[str, dict[str, Any]] = {}
        self.summaries: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}

    async def settle(self, a: FailoverPeer, b: FailoverPeer) -> None:
        """Stop both peers' sending, then have each account for the other's messages."""
        for peer in (a, b):
            await peer.tell("stop")
            self.lasts[peer.name] = await peer.wait_for(lambda e: e["event"] == "sent")
        for peer, other in ((a, b), (b, a)):
            last = self.lasts[other.name]
            await peer.tell(f"end {last['last']} {last['last_direct']}")
        for peer in (a, b):
            self.summaries[peer.name] = await peer.wait_for(lambda e: e["event"] == "summary")

    async def finish(self, *peers: FailoverPeer) -> None:
        for peer in peers:
            self.logs[peer.name] = await peer.finish()

    def check(self, a: FailoverPeer, b: FailoverPeer) -> None:
        """Every message each sent is delivered to the other once, or counted as lost
        there (with a WARNING), or counted as dropped or refused for a full channel."""
        for peer, other in ((a, b), (b, a)):
            summary, last, log = (
                self.summaries[peer.name],
                self.lasts[other.name],
                self.logs[peer.name],
            )
            # A group message a full channel did not take is counted in drops; a direct
            # one, refused, raised ChannelFull in the sender.
            for kind, refused in (
                ("", lambda first, dropped=summary["dropped"]: dropped),
                ("_direct", other.refused_from),
            ):
                received, lost = summary["received" + kind], summary["lost" + kind]
                assert len(received) == len(set(received)), f"{peer.name} got {kind} twice"
                # From the first message it heard (the other may have started sending
                # before this one joined), every message the other sent is accounted for.
                first, end = min(received), last["last" + kind] + 1
                assert set(received) <= set(range(first, end))
                assert len(received) + lost + refused(first) == end - first, (
                    peer.name,
                    kind,
                    sorted(set(range(first, end)) - set(received)),
                    lost,
                    last,
                )
            if summary["lost"]:
                assert "messages to group 'room' were not heard by this process" in log, log
            if summary["lost_direct"]:
                assert "direct messages to this process's channels never reached" in log, log
            assert "Traceback" not in log, log

    def lost(self) -> dict[str, tuple[int, int]]:
        """Counted as lost by each peer: (group, direct)."""
        return {n: (s["lost"], s["lost_direct"]) for n, s in self.summaries.items()}


async def test_broadcasts_survive_a_master_killed_mid_broadcast(
    own_sentinel_group: Any, prefix: str
) -> None:
    group = own_sentinel_group
    a, b = peers = await start_pair(group.url, prefix)
    accounts = Accounts()
    try:
        for peer in peers:
            for kind in ("got", "gotd"):
                await peer.wait_for(lambda e, k=kind: e["event"] == k and e["n"] >= 50)
        # What Redis acknowledged and then lost: with replication cut, b is frozen while
        # the master takes a's direct messages for it until its channel is full (then
        # refuses them), and the master dies before b reads them.
        group.cut_replication()
        b.process.send_signal(signal.SIGSTOP)
        try:
            await a.wait_for(lambda e: e["event"] == "full")
            killed_at = time.time()
            new_master = group.kill_master()
        finally:
            b.process.send_signal(signal.SIGCONT)
        # Both keep delivering: each hears messages the other sent after the kill.
        firsts = [
            await peer.wait_for(lambda e, k=kind: e["event"] == k and e["at"] > killed_at)
            for peer in peers
            for kind in ("got", "gotd")
        ]
        group.wait_failover(new_master)
        for peer in peers:
            for kind in ("got", "gotd"):
                n = (await peer.wait_for(lambda e, k=kind: e["event"] == k))["n"]
                await peer.wait_for(lambda e, k=kind, n=n: e["event"] == k and e["n"] >= n + 50)
        await accounts.settle(a, b)
    finally:
        await accounts.finish(*peers)
    accounts.check(a, b)
    # Direct messages Redis had taken for b and lost are counted, not only failed sends.
    failed = sum(e["event"] == "failed" and e["kind"] == "direct" for e in a.events)
    assert accounts.lost()["b"][1] > failed, (accounts.lost(), failed)
    # The failover was noticed: each process's pub/sub reconnected.
    assert all("Redis pub/sub" in log for log in accounts.logs.values()), accounts.logs
    print(
        "first delivery after the kill, s (group, direct):",
        [round(f["now"] - killed_at, 3) for f in firsts],
        "lost (group, direct):",
        accounts.lost(),
        "failed sends:",
        {p.name: sum(e["event"] == "failed" for e in p.events) for p in peers},
    )


async def test_a_sender_quiet_from_the_kill_on_has_its_lost_tail_counted(
    own_sentinel_group: Any, prefix: str
) -> None:
    group = own_sentinel_group
    a, b = peers = await start_pair(group.url, prefix)
    summary: dict[str, Any] = {}
    try:
        for kind in ("got", "gotd"):
            await b.wait_for(lambda e, k=kind: e["event"] == k and e["n"] >= 20)
        # With replication cut and b frozen, the master takes a's direct messages for b
        # until its channel is full; a stops sending for good and the master dies before
        # b reads them. Nothing a sends later can reveal them.
        group.cut_replication()
        b.process.send_signal(signal.SIGSTOP)
        try:
            await a.wait_for(lambda e: e["event"] == "full")
            await a.tell("halt")
            last = await a.wait_for(lambda e: e["event"] == "sent")
            new_master = group.kill_master()
        finally:
            b.process.send_signal(signal.SIGCONT)
        group.wait_failover(new_master)

        def accounted(s: dict[str, Any]) -> list[tuple[int, int, int, int]]:
            """(delivered, counted lost, refused, sent) from b's first message heard."""
            rows = []
            for kind, refused in (
                ("", lambda first: s["dropped"]),
                ("_direct", a.refused_from),
            ):
                received = s["received" + kind]
                first = min(received)
                rows.append(
                    (
                        len(received),
                        s["lost" + kind],
                        refused(first),
                        last["last" + kind] + 1 - first,
                    )
                )
            return rows

        # Every message a sent is delivered to b, counted lost there, or was refused.
        deadline = time.monotonic() + WAIT
        while True:
            seen = len(b.events)
            await b.tell("account")
            summary = await b.wait_for(lambda e: e["event"] == "summary", seen=seen)
            rows = accounted(summary)
            if all(d + lost + refused == sent for d, lost, refused, sent in rows):
                break
            assert time.monotonic() < deadline, (rows, b.events[seen:][-3:])
            await asyncio.sleep(0.2)
        received = summary["received"], summary["received_direct"]
        assert all(len(r) == len(set(r)) for r in received), "delivered twice"
        # The tail Redis acknowledged and lost was counted, with nothing sent after it.
        assert summary["lost_direct"] > 0, rows
    finally:
        logs = [await peer.finish() for peer in peers]
    assert "direct messages to this process's channels never reached" in logs[1], logs[1]
    assert all("Traceback" not in log for log in logs), logs
    print("b's (delivered, counted lost, refused, sent) of a's (group, direct):", rows)


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
