"""Kill and restart redis-server under live layers: clear errors, then recovery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from chanlite_redis import RedisLayer, RedisUnavailable

WAIT = 10.0


async def _until(condition: Any, what: str, timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_outage_fails_fast_then_group_send_reaches_members_again(
    own_redis: Any, prefix: str
) -> None:
    receiver = RedisLayer(own_redis.url, prefix=prefix, timeout=1.0)
    sender = RedisLayer(own_redis.url, prefix=prefix, timeout=1.0)
    try:
        members = [await receiver.new_channel() for _ in range(3)]
        for channel in members:
            await receiver.group_add("room", channel)
        await sender.group_send("room", {"type": "before"})
        got, message = await asyncio.wait_for(receiver.receive_local(), WAIT)
        assert sorted(got) == sorted(members) and message["type"] == "before"

        own_redis.stop()
        # Every kind of call fails with a clear error instead of hanging.
        with pytest.raises(RedisUnavailable, match="unreachable"):
            await asyncio.wait_for(sender.group_send("room", {"type": "lost"}), WAIT)
        with pytest.raises(RedisUnavailable):
            await asyncio.wait_for(sender.send(members[0], {"type": "lost"}), WAIT)
        with pytest.raises(ConnectionError):  # RedisUnavailable is a ConnectionError too
            await asyncio.wait_for(sender.group_add("other", "plain-member"), WAIT)
        listener = receiver._listener
        assert listener is not None
        await _until(lambda: not listener.connected, "the listener to notice the outage")

        own_redis.start()
        await _until(lambda: listener.connected, "the listener to reconnect")
        assert listener.reconnects >= 1
        # Same layer objects: the group is re-subscribed, direct sends flow again.
        for i in range(3):
            await sender.group_send("room", {"type": "after", "i": i})
        await sender.send(members[1], {"type": "direct"})
        seen = []
        for _ in range(4):
            got, message = await asyncio.wait_for(receiver.receive_local(), WAIT)
            seen.append((sorted(got), message))
        assert [m for _, m in seen if m["type"] == "after"] == [
            {"type": "after", "i": i} for i in range(3)
        ]
        assert all(got == sorted(members) for got, m in seen if m["type"] == "after")
        assert ([members[1]], {"type": "direct"}) in seen
        # ...and nothing twice.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(receiver.receive_local(), 0.5)
    finally:
        await sender.close()
        await receiver.close()


async def test_plain_channel_receive_recovers_after_restart(own_redis: Any, prefix: str) -> None:
    layer = RedisLayer(own_redis.url, prefix=prefix, timeout=1.0)
    other = RedisLayer(own_redis.url, prefix=prefix, timeout=1.0)
    try:
        await layer.send("worker", {"type": "one"})
        assert (await asyncio.wait_for(layer.receive("worker"), WAIT))["type"] == "one"
        own_redis.stop()
        own_redis.start()
        # The first command after the restart gets a fresh connection, not an error.
        await other.send("worker", {"type": "two"})
        assert (await asyncio.wait_for(layer.receive("worker"), WAIT))["type"] == "two"
    finally:
        await other.close()
        await layer.close()
