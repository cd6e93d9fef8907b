from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chanlite.layers import BaseLayer
from chanlite.layers.memory import MemoryLayer
from chanlite.testing import LayerContract


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
