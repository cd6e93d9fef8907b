"""Two OS processes, each with its own layer, sharing one Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chanlite_redis import RedisLayer
from peer_process import WAIT, PeerProcess
from redis.asyncio import Redis

PEER = Path(__file__).with_name("redis_peer.py")


Peers = tuple[PeerProcess, PeerProcess]


@pytest.fixture
async def peers(redis_server: Any, prefix: str) -> AsyncIterator[Peers]:
    a = await PeerProcess.start(PEER, redis_server.url, prefix)
    b = await PeerProcess.start(PEER, redis_server.url, prefix)
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def test_broadcast_both_ways_one_item_per_process(peers: Peers) -> None:
    a, b = peers
    for sender, number in ((a, 1), (b, 2)):
        message = {"type": "chanlite.broadcast", "text": f"hello {number}"}
        await sender.command(op="group_send", group="room", message=message)
        for peer in (a, b):
            got = await peer.next_event("received")
            # One item per process naming both of its members: encode-once broadcast.
            assert got["channels"] == sorted(peer.ready["channels"])
            assert got["message"] == message


async def test_direct_send_crosses_processes(peers: Peers) -> None:
    a, b = peers
    await a.command(op="send", channel=b.ready["channels"][1], message={"type": "to.b", "n": 1})
    got = await b.next_event("received")
    assert got == {
        "event": "received",
        "channels": [b.ready["channels"][1]],
        "message": {"type": "to.b", "n": 1},
    }
    await b.command(op="send", channel=a.ready["channels"][0], message={"type": "to.a", "n": 2})
    got = await a.next_event("received")
    assert got["channels"] == [a.ready["channels"][0]] and got["message"]["n"] == 2


async def test_local_and_remote_processes_share_a_group(
    peers: Peers, make_redis_layer: Any
) -> None:
    a, b = peers
    layer: RedisLayer = await make_redis_layer()
    mine = await layer.new_channel()
    await layer.group_add("room", mine)
    await layer.group_send("room", {"type": "from.test"})
    assert (await asyncio.wait_for(layer.receive(mine), WAIT))["type"] == "from.test"
    for peer in (a, b):
        assert (await peer.next_event("received"))["message"] == {"type": "from.test"}


async def test_dead_process_memberships_are_cleaned(
    peers: Peers, make_redis_layer: Any, redis_server: Any, prefix: str
) -> None:
    _, b = peers
    # Same heartbeat as the peers: a sender judges others by its own setting.
    layer: RedisLayer = await make_redis_layer(heartbeat=0.2)
    # A membership made by another process lives in Redis, unlike a process's own.
    await layer.group_add("watchers", b.ready["channels"][0])
    await layer.group_send("watchers", {"type": "first"})
    assert (await b.next_event("received"))["message"] == {"type": "first"}
    await b.stop()
    client = Redis.from_url(redis_server.url)
    try:
        # The heartbeat key (0.2 s beat, 0.6 s TTL) lapses once the process is gone.
        for _ in range(100):
            if not await client.exists(prefix + "a:{" + b.ready["client_id"] + "}"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("heartbeat of the killed process never expired")
        await asyncio.sleep(0.7)  # past the grace given to a process that just joined
        await layer.group_send("watchers", {"type": "second"})
        assert not await client.hexists(f"{prefix}m:{{watchers}}", b.ready["channels"][0])
    finally:
        await client.aclose()
