"""The channel layer contract suite, shared by every layer.

Subclass :class:`LayerContract` in a test module and provide a ``make_layer`` fixture: an
async factory taking layer options (``capacity``, ``expiry``, ``group_expiry``,
``channel_capacity``) and returning a fresh, empty layer, closed by the fixture afterwards.
Every test here then runs against that layer: the behaviour of the layer API
(:class:`LayerBehaviourContract`) and what loop changes and cancellation put a layer
through (:class:`LoopSafetyContract`), one suite::

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
import contextlib
import importlib
import random
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
from asgiref.sync import async_to_sync

from chanlite.layers.base import BaseLayer, ChannelFull, ForeignChannel

MakeLayer = Callable[..., Awaitable[BaseLayer]]

# Generous bounds: a correct layer answers in milliseconds; these only stop a hang.
WAIT = 5.0


async def _receive(layer: BaseLayer, channel: str, timeout: float = WAIT) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def _receive_local(layer: BaseLayer, timeout: float = WAIT) -> tuple[list[str], Any]:
    channels, message = await asyncio.wait_for(layer.receive_local(), timeout)
    return sorted(channels), message


T = TypeVar("T")


async def _on_new_loop(coro: Coroutine[Any, Any, T], timeout: float = WAIT * 4) -> T:
    """Run *coro* under ``asyncio.run`` in a thread: a fresh event loop, gone afterwards.

    The bound catches a loop whose shutdown hangs (a background task that swallows
    the cancel ``asyncio.run`` sends it).
    """
    return await asyncio.wait_for(asyncio.to_thread(asyncio.run, coro), timeout)


async def _nothing_arrives(awaitable: Awaitable[Any], within: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(awaitable, within)
    except asyncio.TimeoutError:
        return True
    return False


class LayerBehaviourContract:
    """The layer API's behaviour: send/receive, capacity, expiry, names, groups, flush."""

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

    async def test_what_msgpack_cannot_carry_is_refused_with_the_codec_message(
        self, make_layer: MakeLayer
    ) -> None:
        # One behaviour in every layer: memory:// too, so an app that works with one
        # process does not break the day a second one needs a shared layer.
        import datetime

        from chanlite.layers.codec import MsgpackCodec

        layer = await make_layer()
        message = {"type": "when", "data": {"at": datetime.datetime(2026, 1, 1)}}
        with pytest.raises(TypeError) as expected:
            MsgpackCodec().encode(message)
        await layer.group_add("refusals", "refusals-member")
        with pytest.raises(TypeError) as refused:
            await layer.send("refusals-member", message)
        assert str(refused.value) == str(expected.value)
        with pytest.raises(TypeError) as refused:
            await layer.group_send("refusals", message)
        assert str(refused.value) == str(expected.value)
        assert "message['data']['at'] is datetime" in str(expected.value)
        await layer.send("refusals-member", {"type": "fine"})  # nothing was queued before it
        assert (await _receive(layer, "refusals-member"))["type"] == "fine"

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

    async def test_expired_deliveries_to_local_channels_are_counted(
        self, make_layer: MakeLayer
    ) -> None:
        """A message for this process's channels that expires unread is counted once per
        channel in ``local_inbox.expired`` (what ``chanlite_dropped{reason="expired"}``
        reads): a direct send, a group message (one per local member), and a copy sorted
        out for one channel's receiver that did not come in time."""
        layer = await make_layer(expiry=0.3)
        inbox = layer.local_inbox
        if inbox is None:
            pytest.skip("this layer keeps no local inbox (local_inbox is None): no counts")
        a, b = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("exp-count", a)
        await layer.group_add("exp-count", b)
        await layer.group_send("exp-count", {"type": "old"})
        await layer.send(a, {"type": "old"})
        await asyncio.sleep(0.5)
        await layer.send(a, {"type": "new"})
        assert (await _receive(layer, a))["type"] == "new"
        assert inbox.expired == 3
        # The group message is taken for a's receiver; b's copy waits for b's and expires.
        await layer.group_send("exp-count", {"type": "both"})
        assert (await _receive(layer, a))["type"] == "both"
        await asyncio.sleep(0.5)
        await layer.send(b, {"type": "new"})
        assert (await _receive(layer, b))["type"] == "new"
        assert inbox.expired == 4

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

    async def test_receive_on_another_layers_channel_fails_at_once(
        self, make_layer: MakeLayer
    ) -> None:
        layer, other = await make_layer(), await make_layer()
        theirs = await other.new_channel()
        for name in (theirs, "specific.0123456789ab!token"):
            with pytest.raises(ForeignChannel, match="made by another layer object"):
                await asyncio.wait_for(layer.receive(name), WAIT)
        await other.send(theirs, {"type": "still.theirs"})
        assert (await _receive(other, theirs))["type"] == "still.theirs"

    async def test_channel_full_is_what_channels_code_catches(self, make_layer: MakeLayer) -> None:
        expected: type[BaseException] = ChannelFull
        with contextlib.suppress(ImportError):  # without Channels, chanlite's class is it
            expected = importlib.import_module("channels.exceptions").ChannelFull
        layer = await make_layer(capacity=1)
        await layer.send("full-for-channels", {"type": "one"})
        with pytest.raises(expected):
            await layer.send("full-for-channels", {"type": "two"})

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

    async def test_group_send_counted(self, make_layer: MakeLayer) -> None:
        # The member count is optional (None: the layer cannot tell), never wrong.
        layer = await make_layer()
        local = await layer.new_channel()
        await layer.group_add("counted", local)
        await layer.group_add("counted", "counted-plain")
        assert await layer.group_send_counted("counted", {"type": "n"}) in (None, 2)
        assert (await _receive(layer, "counted-plain"))["type"] == "n"
        assert (await _receive_local(layer)) == ([local], {"type": "n"})
        assert await layer.group_send_counted("counted-empty", {"type": "n"}) in (None, 0)
        assert await layer.send_counted("counted-plain", {"type": "n"}) is None
        assert await layer.send_counted(local, {"type": "n"}) in (None, 1)

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


class LoopSafetyContract:
    """Loop changes and cancellation: what Channels code and sync callers put a layer through.

    Part of :class:`LayerContract`. Needs the same ``make_layer`` fixture.
    """

    # -- successive event loops (async_to_sync per call, asyncio.run per call) -------------

    async def test_messages_survive_loop_changes(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()

        async def prepare() -> tuple[str, str]:
            one, two = await layer.new_channel(), await layer.new_channel()
            await layer.group_add("loops", one)
            await layer.group_add("loops", "loops-plain")
            await layer.send(one, {"type": "direct", "n": 1})
            await layer.send(two, {"type": "direct", "n": 2})
            return one, two

        one, two = await _on_new_loop(prepare())
        await _on_new_loop(layer.group_send("loops", {"type": "group", "n": 3}))
        await _on_new_loop(layer.send(one, {"type": "direct", "n": 4}))
        # A receive left waiting when its loop ends must not take anything with it.
        assert await _on_new_loop(_nothing_arrives(layer.receive("loops-plain2"), 0.1))
        assert (await _on_new_loop(_receive(layer, one)))["n"] == 1
        assert (await _on_new_loop(_receive(layer, one)))["n"] == 3
        assert (await _on_new_loop(_receive(layer, "loops-plain")))["n"] == 3
        assert (await _on_new_loop(_receive(layer, two)))["n"] == 2
        assert (await _on_new_loop(_receive(layer, one)))["n"] == 4
        await _on_new_loop(layer.send("loops-plain2", {"type": "late"}))
        assert (await _on_new_loop(_receive(layer, "loops-plain2")))["type"] == "late"

    async def test_receive_local_survives_loop_changes(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        mine = await _on_new_loop(layer.new_channel())
        await _on_new_loop(layer.group_add("loops-local", mine))
        # A reader whose loop ends while it waits takes nothing with it.
        assert await _on_new_loop(_nothing_arrives(layer.receive_local(), 0.1))
        await _on_new_loop(layer.send(mine, {"type": "direct"}))
        await _on_new_loop(layer.group_send("loops-local", {"type": "group"}))
        assert await _on_new_loop(_receive_local(layer)) == ([mine], {"type": "direct"})
        assert await _on_new_loop(_receive_local(layer)) == ([mine], {"type": "group"})

    async def test_receivers_abandoned_with_their_loop(self, make_layer: MakeLayer) -> None:
        # A loop closed with receives still waiting on it, never cancelled (a loop someone
        # stopped and closed by hand): the next loop's sends and receives must work.
        layer = await make_layer()
        mine = await _on_new_loop(layer.new_channel())
        await _on_new_loop(layer.group_add("abandoned", mine))

        def abandon() -> None:
            loop = asyncio.new_event_loop()
            try:
                tasks = [
                    loop.create_task(receive)
                    for receive in (layer.receive_local(), layer.receive("abandoned-plain"))
                ]
                loop.run_until_complete(asyncio.sleep(0.1))
                assert not any(task.done() for task in tasks)
            finally:
                loop.close()

        await asyncio.to_thread(abandon)
        await _on_new_loop(layer.send(mine, {"type": "direct"}))
        await _on_new_loop(layer.group_send("abandoned", {"type": "group"}))
        await _on_new_loop(layer.send("abandoned-plain", {"type": "plain"}))
        assert await _on_new_loop(_receive_local(layer)) == ([mine], {"type": "direct"})
        assert await _on_new_loop(_receive_local(layer)) == ([mine], {"type": "group"})
        assert (await _on_new_loop(_receive(layer, "abandoned-plain")))["type"] == "plain"

    async def test_async_to_sync_per_call(self, make_layer: MakeLayer) -> None:
        # The pattern of Channels' sync consumers and of its test_send_receive_sync.
        layer = await make_layer()

        def sync_side() -> list[Any]:
            new_channel = async_to_sync(layer.new_channel)
            send = async_to_sync(layer.send)
            receive = async_to_sync(layer.receive)
            group_add = async_to_sync(layer.group_add)
            group_send = async_to_sync(layer.group_send)
            one, two = new_channel(), new_channel()
            group_add("sync-group", one)
            group_add("sync-group", two)
            send(one, {"type": "direct.one"})
            group_send("sync-group", {"type": "group.all"})
            send(two, {"type": "direct.two"})
            return [
                receive(one)["type"],
                receive(one)["type"],
                receive(two)["type"],
                receive(two)["type"],
            ]

        got = await asyncio.wait_for(asyncio.to_thread(sync_side), WAIT * 4)
        assert got == ["direct.one", "group.all", "group.all", "direct.two"]

    # -- cancellation ------------------------------------------------------------------------

    async def test_cancels_at_random_points_lose_nothing(self, make_layer: MakeLayer) -> None:
        """``asyncio.run`` around join/send/receive, each cancelled at a random moment.

        Every cancel must end its task as cancelled (never swallowed), every loop must
        shut down in bounded time, and every message a completed ``send`` stored must be
        received exactly once in the end. A ``send`` cancelled while the backend stores
        the message may have stored it (no backend can take back what a server or a
        file committed): such a message is received exactly once too, never twice.
        """
        layer = await make_layer(capacity=1000)
        rng = random.Random(20)
        local = await _on_new_loop(layer.new_channel())
        sent: list[int] = []
        tried: list[int] = []
        received: list[int] = []

        async def work(n: int) -> None:
            await layer.group_add("cancel-group", local)
            tried.append(n)
            await layer.send("cancel-plain", {"type": "n", "n": n})
            sent.append(n)
            tried.append(-n)
            await layer.send(local, {"type": "n", "n": -n})
            sent.append(-n)
            await layer.group_send("cancel-group", {"type": "g"})
            received.append((await layer.receive("cancel-plain"))["n"])
            while True:
                message = await layer.receive(local)
                if message["type"] == "n":
                    received.append(message["n"])
                    return

        async def one_run(n: int, delay: float) -> None:
            task = asyncio.ensure_future(work(n))
            await asyncio.sleep(delay)
            cancelled = task.cancel()
            await asyncio.wait([task], timeout=WAIT)
            assert task.done(), "a cancelled layer call did not finish"
            if cancelled:
                assert task.cancelled(), f"the cancel was swallowed: {task!r}"

        for n in range(1, 41):
            delay = rng.choice([0, 0, 0.0005, 0.001, 0.003, 0.01, 0.03])
            await _on_new_loop(one_run(n, delay))

        async def drain() -> None:
            for channel in ("cancel-plain", local):
                while True:
                    try:
                        message = await asyncio.wait_for(layer.receive(channel), 0.5)
                    except asyncio.TimeoutError:
                        break
                    if message["type"] == "n":
                        received.append(message["n"])

        await _on_new_loop(drain())
        assert sorted(set(received)) == sorted(received), "a message arrived twice"
        assert sorted(set(sent) - set(received)) == [], "messages whose send returned were lost"
        assert set(received) <= set(tried)

    async def test_close_is_bounded_after_cancels(self, make_layer: MakeLayer) -> None:
        rng = random.Random(21)

        async def one_run(delay: float, close: bool = True) -> None:
            layer = await make_layer()
            mine = await layer.new_channel()

            async def work() -> None:
                await layer.group_add("closing", mine)
                await layer.group_send("closing", {"type": "g"})
                await layer.receive(mine)
                await layer.receive(mine)  # nothing more comes: cancelled while waiting

            task = asyncio.ensure_future(work())
            reader = asyncio.ensure_future(layer.receive_local())
            await asyncio.sleep(delay)
            task.cancel()
            reader.cancel()
            await asyncio.wait([task, reader], timeout=WAIT)
            assert task.cancelled(), f"the cancel was swallowed: {task!r}"
            if close:
                await asyncio.wait_for(layer.close(), WAIT)

        for _ in range(15):
            await _on_new_loop(one_run(rng.choice([0, 0.001, 0.005, 0.02])))
        # And loops that end with the layer still open (Channels never closes its layers).
        for _ in range(3):
            await _on_new_loop(one_run(rng.choice([0, 0.001, 0.02]), close=False))


class LayerContract(LayerBehaviourContract, LoopSafetyContract):
    """Behaviour every chanlite channel layer must show. Needs a ``make_layer`` fixture.

    The layer API (:class:`LayerBehaviourContract`) and loop changes and cancellation
    (:class:`LoopSafetyContract`): one suite, run on every layer.
    """
