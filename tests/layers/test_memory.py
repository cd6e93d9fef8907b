from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chanlite.layers import BaseLayer
from chanlite.layers.memory import MemoryLayer
from chanlite.layers.streams import HistoryGap, HistoryPolicy
from chanlite.testing import HistoryContract, LayerContract, PresenceContract


# docs/layers.md shows this class to layer authors as the template.
# --8<-- [start:contract]
class TestMemoryContract(LayerContract):
    @pytest.fixture
    async def make_layer(self) -> AsyncIterator[Any]:
        made: list[BaseLayer] = []

        async def make(**options: Any) -> BaseLayer:
            layer = MemoryLayer(**options)
            made.append(layer)
            return layer

        yield make
        for layer in made:
            await layer.close()


# --8<-- [end:contract]


async def test_group_send_cost_is_per_member_not_per_channel() -> None:
    # 10k idle channels hold messages; a group_send to 3 members must not visit them.
    layer = MemoryLayer(capacity=10)
    for i in range(10_000):
        await layer.send(f"idle-{i}", {"type": "x"})
    visited: list[str] = []
    original = layer.get_capacity

    def counting(channel: str) -> int:
        visited.append(channel)
        return original(channel)

    layer.get_capacity = counting  # type: ignore[method-assign]
    for i in range(3):
        await layer.group_add("small", f"member-{i}")
    await layer.group_send("small", {"type": "hi"})
    assert sorted(visited) == ["member-0", "member-1", "member-2"]


async def test_expired_local_messages_are_skipped() -> None:
    layer = MemoryLayer(expiry=0.1)
    mine = await layer.new_channel()
    await layer.send(mine, {"type": "old"})
    await asyncio.sleep(0.2)
    await layer.send(mine, {"type": "new"})
    channels, message = await asyncio.wait_for(layer.receive_local(), 1)
    assert (list(channels), message["type"]) == ([mine], "new")


async def test_expired_messages_on_plain_channels_are_counted() -> None:
    """Every channel of a memory layer is this process's: plain ones' expired messages
    count with the rest (``local_inbox.expired``), found by a send or by a receiver."""
    layer = MemoryLayer(expiry=0.1)
    await layer.send("jobs", {"type": "old"})
    await layer.send("jobs", {"type": "old"})
    await asyncio.sleep(0.2)
    await layer.send("jobs", {"type": "new"})  # finds the two at the head
    assert layer.local_inbox is not None and layer.local_inbox.expired == 2
    assert (await asyncio.wait_for(layer.receive("jobs"), 1))["type"] == "new"
    await layer.send("jobs", {"type": "old"})
    await asyncio.sleep(0.2)
    receiving = asyncio.ensure_future(layer.receive("jobs"))
    await asyncio.sleep(0.05)  # the receiver skips the expired one, then waits
    assert layer.local_inbox.expired == 3 and not receiving.done()
    await layer.send("jobs", {"type": "new"})
    assert (await asyncio.wait_for(receiving, 1))["type"] == "new"


async def test_group_message_is_shared_not_copied_per_member() -> None:
    layer = MemoryLayer()
    members = [await layer.new_channel() for _ in range(3)]
    for member in members:
        await layer.group_add("g", member)
    sent = {"type": "big", "payload": "x" * 1000}
    await layer.group_send("g", sent)
    channels, message = await layer.receive_local()
    assert len(channels) == 3
    assert message is sent


async def test_tight_group_send_loop_waits_for_the_reader_instead_of_dropping() -> None:
    # 1,000 group_sends that never yield, with the process's reader running: the reader
    # gets every one, in order, and nothing is dropped (capacity 100 would drop 900).
    layer = MemoryLayer(capacity=100)
    members = [await layer.new_channel() for _ in range(3)]
    for member in members:
        await layer.group_add("tight", member)
    got: list[int] = []

    async def reader() -> None:
        while len(got) < 1000:
            channels, message = await layer.receive_local()
            assert sorted(channels) == sorted(members)
            got.append(message["n"])

    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0)  # the reader is waiting in receive_local
    for n in range(1000):
        await layer.group_send("tight", {"type": "n", "n": n})
    await asyncio.wait_for(task, 5)
    assert got == list(range(1000))
    assert layer.dropped == 0


async def test_group_send_without_a_reader_drops_at_once() -> None:
    # Nobody reads: waiting could not help, so a full member is dropped and counted at once.
    layer = MemoryLayer(capacity=2)
    mine = await layer.new_channel()
    await layer.group_add("idle", mine)
    for n in range(5):
        await asyncio.wait_for(layer.group_send("idle", {"type": "n", "n": n}), 0.5)
    assert layer.drops["idle"] == 3


class TestMemoryStreams(HistoryContract, PresenceContract):
    make_layer = TestMemoryContract.make_layer


async def test_each_memory_layer_is_its_own_epoch() -> None:
    one = MemoryLayer(history={"room.*": HistoryPolicy(size=5)})
    two = MemoryLayer(history={"room.*": HistoryPolicy(size=5)})
    await one.group_send("room.a", {"type": "x"})
    position = await one.stream_position("room.a")
    with pytest.raises(HistoryGap) as caught:
        await two.history("room.a", position)
    assert caught.value.reason == "epoch"


async def test_encodable_only_false_carries_any_object_knowingly() -> None:
    import datetime

    from chanlite.layers import LayerConfigError, get_layer

    layer = get_layer("memory://?encodable_only=false")
    assert isinstance(layer, MemoryLayer) and not layer.encodable_only
    when = datetime.datetime(2026, 1, 1)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "when", "at": when})
    assert (await layer.receive(channel))["at"] is when
    assert get_layer("memory://").encodable_only  # type: ignore[attr-defined]
    with pytest.raises(LayerConfigError, match="Malformed value 'maybe' for option"):
        get_layer("memory://?encodable_only=maybe")
