"""The channel layer contract suite, shared by every layer.

Subclass :class:`LayerContract` in a test module and provide a ``make_layer`` fixture: an
async factory taking layer options (``capacity``, ``expiry``, ``group_expiry``,
``channel_capacity``) and returning a fresh, empty layer, closed by the fixture afterwards.
Every test here then runs against that layer::

    class TestMyLayerContract(LayerContract):
        @pytest.fixture
        async def make_layer(self, tmp_path):
            made = []
            async def make(**options):
                layer = MyLayer(path=tmp_path / "db", **options)
                made.append(layer)
                return layer
            yield make
            for layer in made:
                await layer.close()
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chanlite.layers.base import BaseLayer, ChannelFull

MakeLayer = Callable[..., Awaitable[BaseLayer]]

# Generous bounds: a correct layer answers in milliseconds; these only stop a hang.
WAIT = 5.0


async def _receive(layer: BaseLayer, channel: str, timeout: float = WAIT) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def _receive_local(layer: BaseLayer, timeout: float = WAIT) -> tuple[list[str], Any]:
    channels, message = await asyncio.wait_for(layer.receive_local(), timeout)
    return sorted(channels), message


async def _nothing_arrives(awaitable: Awaitable[Any], within: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(awaitable, within)
    except asyncio.TimeoutError:
        return True
    return False


class LayerContract:
    """Behaviour every chanlite channel layer must show. Needs a ``make_layer`` fixture."""

    # -- send / receive ---------------------------------------------------------------

    async def test_send_receive(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        await layer.send("test-channel-1", {"type": "test.message", "text": "Ahoy-hoy!"})
        message = await _receive(layer, "test-channel-1")
        assert message == {"type": "test.message", "text": "Ahoy-hoy!"}

    async def test_receive_waits_for_send(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        receiver = asyncio.ensure_future(_receive(layer, "later"))
        await asyncio.sleep(0.05)
        assert not receiver.done()
        await layer.send("later", {"type": "x.y", "n": 1})
        assert (await receiver)["n"] == 1

    async def test_fifo_order(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        for i in range(10):
            await layer.send("ordered", {"type": "seq", "i": i})
        got = [(await _receive(layer, "ordered"))["i"] for _ in range(10)]
        assert got == list(range(10))

    async def test_payload_types_round_trip(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        message = {
            "type": "types.all",
            "text": "héllo ✓",
            "bytes": b"\x00\xff",
            "int": 2**40,
            "float": 1.5,
            "bool": True,
            "none": None,
            "list": [1, "two", [3]],
            "dict": {"nested": {"deep": 1}},
        }
        await layer.send("types", message)
        assert await _receive(layer, "types") == message

    async def test_channels_are_independent(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        await layer.send("chan-a", {"type": "a"})
        await layer.send("chan-b", {"type": "b"})
        assert (await _receive(layer, "chan-b"))["type"] == "b"
        assert (await _receive(layer, "chan-a"))["type"] == "a"

    async def test_many_concurrent_receivers_each_get_one(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(capacity=100)
        receivers = [asyncio.ensure_future(_receive(layer, "shared")) for _ in range(20)]
        await asyncio.sleep(0.05)
        for i in range(20):
            await layer.send("shared", {"type": "work", "i": i})
        results = await asyncio.gather(*receivers)
        assert sorted(message["i"] for message in results) == list(range(20))

    async def test_cancelled_receive_loses_nothing(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        waiting = asyncio.ensure_future(layer.receive("cancel-me"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await layer.send("cancel-me", {"type": "kept"})
        assert (await _receive(layer, "cancel-me"))["type"] == "kept"

    # -- capacity -----------------------------------------------------------------------

    async def test_capacity(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(capacity=3)
        for _ in range(3):
            await layer.send("small", {"type": "fill"})
        with pytest.raises(ChannelFull):
            await layer.send("small", {"type": "overflow"})
        # Receiving makes room again, and nothing that was accepted was lost.
        assert (await _receive(layer, "small"))["type"] == "fill"
        await layer.send("small", {"type": "after"})
        kinds = [(await _receive(layer, "small"))["type"] for _ in range(3)]
        assert kinds == ["fill", "fill", "after"]

    async def test_channel_capacity_patterns(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(
            capacity=10,
            channel_capacity={"tiny.*": 1, re.compile(r"^big$"): 20},
        )
        assert layer.get_capacity("tiny.one") == 1
        assert layer.get_capacity("big") == 20
        assert layer.get_capacity("other") == 10
        await layer.send("tiny.one", {"type": "x"})
        with pytest.raises(ChannelFull):
            await layer.send("tiny.one", {"type": "x"})
        for _ in range(15):
            await layer.send("big", {"type": "x"})

    # -- expiry ---------------------------------------------------------------------------

    async def test_expiry(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(expiry=0.2)
        await layer.send("expiring", {"type": "old"})
        await asyncio.sleep(0.4)
        await layer.send("expiring", {"type": "new"})
        assert (await _receive(layer, "expiring"))["type"] == "new"

    async def test_expired_messages_free_capacity(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(expiry=0.2, capacity=1)
        await layer.send("exp-cap", {"type": "old"})
        await asyncio.sleep(0.4)
        await layer.send("exp-cap", {"type": "new"})  # must not raise ChannelFull
        assert (await _receive(layer, "exp-cap"))["type"] == "new"

    # -- names and messages -----------------------------------------------------------

    @pytest.mark.parametrize(
        "name", ["", "spaces not allowed", "a" * 100, "bad/char", "ünicode", 42, None]
    )
    async def test_bad_channel_name(self, make_layer: MakeLayer, name: Any) -> None:
        layer = await make_layer()
        with pytest.raises(TypeError, match="Channel name must be a valid unicode string"):
            await layer.send(name, {"type": "x"})
        with pytest.raises(TypeError, match="Channel name"):
            await layer.group_add("good", name)

    @pytest.mark.parametrize("name", ["", "no!bang", "a" * 100, "sp ace", 7])
    async def test_bad_group_name(self, make_layer: MakeLayer, name: Any) -> None:
        layer = await make_layer()
        with pytest.raises(TypeError, match="Group name must be a valid unicode string"):
            await layer.group_add(name, "good-channel")
        with pytest.raises(TypeError, match="Group name"):
            await layer.group_send(name, {"type": "x"})

    async def test_name_length_limit_is_99(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        await layer.send("c" * 99, {"type": "ok"})
        assert (await _receive(layer, "c" * 99))["type"] == "ok"

    @pytest.mark.parametrize("message", [["not", "a", "dict"], {"no": "type"}, {"type": 5}])
    async def test_bad_message(self, make_layer: MakeLayer, message: Any) -> None:
        layer = await make_layer()
        with pytest.raises(TypeError, match="message"):
            await layer.send("fine", message)

    async def test_extensions(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        assert "groups" in layer.extensions
        assert "flush" in layer.extensions

    # -- process-local channels -------------------------------------------------------

    async def test_new_channel_names_are_unique_and_local(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        names = {await layer.new_channel() for _ in range(50)}
        assert len(names) == 50
        for name in names:
            assert "!" in name
            assert layer.is_local(name)
            layer.require_valid_channel_name(name)
        assert not layer.is_local("plain.channel")

    async def test_receive_on_new_channel(self, make_layer: MakeLayer) -> None:
        # The Channels way: a consumer receives on its own channel.
        layer = await make_layer()
        one, two = await layer.new_channel(), await layer.new_channel()
        await layer.send(two, {"type": "for.two"})
        await layer.send(one, {"type": "for.one"})
        assert (await _receive(layer, one))["type"] == "for.one"
        assert (await _receive(layer, two))["type"] == "for.two"

    async def test_receive_local(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        one, two = await layer.new_channel(), await layer.new_channel()
        await layer.send(one, {"type": "a"})
        await layer.send(two, {"type": "b"})
        assert await _receive_local(layer) == ([one], {"type": "a"})
        assert await _receive_local(layer) == ([two], {"type": "b"})

    async def test_local_channel_capacity(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(capacity=2)
        mine = await layer.new_channel()
        await layer.send(mine, {"type": "1"})
        await layer.send(mine, {"type": "2"})
        with pytest.raises(ChannelFull):
            await layer.send(mine, {"type": "3"})
        await _receive_local(layer)
        await layer.send(mine, {"type": "3"})

    # -- groups --------------------------------------------------------------------------

    async def test_group_send(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        await layer.group_add("tg", "tg-1")
        await layer.group_add("tg", "tg-2")
        await layer.group_add("tg", "tg-3")
        await layer.group_discard("tg", "tg-2")
        await layer.group_send("tg", {"type": "hello"})
        assert (await _receive(layer, "tg-1"))["type"] == "hello"
        assert (await _receive(layer, "tg-3"))["type"] == "hello"
        assert await _nothing_arrives(layer.receive("tg-2"))

    async def test_group_add_is_idempotent(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        await layer.group_add("dup", "dup-1")
        await layer.group_add("dup", "dup-1")
        await layer.group_send("dup", {"type": "once"})
        assert (await _receive(layer, "dup-1"))["type"] == "once"
        assert await _nothing_arrives(layer.receive("dup-1"))

    async def test_group_discard_unknown_is_silent(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        await layer.group_discard("nobody", "nothing")
        await layer.group_send("nobody", {"type": "void"})

    async def test_group_send_to_local_members_arrives_once(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        members = sorted([await layer.new_channel() for _ in range(5)])
        for channel in members:
            await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "chat.message", "text": "hi"})
        channels, message = await _receive_local(layer)
        assert channels == members
        assert message == {"type": "chat.message", "text": "hi"}
        assert await _nothing_arrives(layer.receive_local())

    async def test_group_send_over_capacity_drops_and_counts(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(capacity=2)
        await layer.group_add("busy", "full-member")
        await layer.group_add("busy", "free-member")
        for i in range(2):
            await layer.send("full-member", {"type": "fill", "i": i})
        before = layer.dropped
        await layer.group_send("busy", {"type": "news"})  # never raises for a full member
        assert layer.dropped == before + 1
        assert layer.drops["busy"] >= 1
        assert (await _receive(layer, "free-member"))["type"] == "news"
        got = [(await _receive(layer, "full-member"))["type"] for _ in range(2)]
        assert got == ["fill", "fill"]
        assert await _nothing_arrives(layer.receive("full-member"))

    async def test_group_send_local_over_capacity_drops_and_counts(
        self, make_layer: MakeLayer
    ) -> None:
        layer = await make_layer(capacity=1)
        full, free = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("busy-local", full)
        await layer.group_add("busy-local", free)
        await layer.send(full, {"type": "fill"})
        await layer.group_send("busy-local", {"type": "news"})
        assert layer.drops["busy-local"] == 1
        assert await _receive_local(layer) == ([full], {"type": "fill"})
        assert await _receive_local(layer) == ([free], {"type": "news"})

    async def test_group_expiry(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(group_expiry=0.2)
        await layer.group_add("short", "short-1")
        await asyncio.sleep(0.4)
        await layer.group_add("short", "short-2")
        await layer.group_send("short", {"type": "still.here"})
        assert (await _receive(layer, "short-2"))["type"] == "still.here"
        assert await _nothing_arrives(layer.receive("short-1"))

    async def test_group_send_order_per_member(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        await layer.group_add("seq", "seq-1")
        for i in range(10):
            await layer.group_send("seq", {"type": "n", "i": i})
        assert [(await _receive(layer, "seq-1"))["i"] for _ in range(10)] == list(range(10))

    # -- flush ------------------------------------------------------------------------------

    async def test_flush(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        await layer.send("flushed", {"type": "gone"})
        await layer.group_add("flush-group", "flushed-member")
        await layer.flush()
        await layer.group_send("flush-group", {"type": "gone.too"})
        assert await _nothing_arrives(layer.receive("flushed"))
        assert await _nothing_arrives(layer.receive("flushed-member"))
        await layer.send("flushed", {"type": "works"})
        assert (await _receive(layer, "flushed"))["type"] == "works"
