"""The history and presence contract suites, shared by every layer that offers them.

Subclass :class:`HistoryContract` and :class:`PresenceContract` beside
:class:`~chanlite.testing.contract.LayerContract`, with the same ``make_layer`` fixture
(it is passed ``history={pattern: HistoryPolicy}`` and ``presence_timeout=`` as well)::

    class TestMyLayerStreams(HistoryContract, PresenceContract):
        make_layer = ...  # as for LayerContract

A layer shared between processes also subclasses :class:`CrossProcessStreamsContract`
and provides a ``layer_url`` fixture: a URL any process can open to reach the *same*
backend state, fresh for each test (a file in ``tmp_path``, a flushed Redis database).
The suite appends its options to it (``history=``, ``presence_timeout=``) and runs real
OS processes (:mod:`chanlite.testing.peer`) against it::

    class TestMyLayerAcrossProcesses(CrossProcessStreamsContract):
        @pytest.fixture
        def layer_url(self, tmp_path):
            return f"sqlite:///{tmp_path / 'layer.db'}"
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chanlite.broadcast import BROADCAST, broadcast_event
from chanlite.layers.base import BaseLayer
from chanlite.layers.errors import NotSupported
from chanlite.layers.registry import get_layer
from chanlite.layers.streams import (
    MAX_PRESENCE_META,
    PRESENCE_DIFF,
    HistoryError,
    HistoryGap,
    HistoryPolicy,
    PresenceError,
    StreamPosition,
)
from chanlite.testing.peer import Peer

MakeLayer = Callable[..., Awaitable[BaseLayer]]

WAIT = 5.0

ROOMS = {"room.*": HistoryPolicy(size=10)}


async def _receive(layer: BaseLayer, channel: str, timeout: float = WAIT) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def _nothing_arrives(layer: BaseLayer, channel: str, within: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), within)
    except asyncio.TimeoutError:
        return True
    return False


async def _send_many(layer: BaseLayer, group: str, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await layer.group_send(group, {"type": "m", "i": i})


def _offsets(events: list[dict[str, Any]]) -> list[int]:
    return [event["offset"] for event in events]


class HistoryContract:
    """Offsets, epochs, retention and exact resume. Needs a ``make_layer`` fixture."""

    async def test_extension_is_announced(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        assert "history" in layer.extensions

    async def test_offsets_epoch_and_group_reach_members(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        one, two = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("room.a", one)
        await layer.group_add("room.a", two)
        await layer.group_add("room.a", "room-a-plain")
        start = await layer.stream_position("room.a")
        assert start.offset == 0 and isinstance(start.epoch, str) and start.epoch
        for i in range(3):
            await layer.group_send("room.a", {"type": "chat.line", "i": i})
        seen = []
        for _ in range(3):
            channels, event = await asyncio.wait_for(layer.receive_local(), WAIT)
            assert sorted(channels) == sorted([one, two])  # one entry for both members
            seen.append(event)
        assert [(e["i"], e["offset"], e["epoch"], e["group"]) for e in seen] == [
            (i, i + 1, start.epoch, "room.a") for i in range(3)
        ]
        assert (await _receive(layer, "room-a-plain"))["offset"] == 1
        assert await layer.stream_position("room.a") == StreamPosition(3, start.epoch)

    async def test_groups_without_history_are_untouched(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        await layer.group_add("lobby", "lobby-1")
        await layer.group_send("lobby", {"type": "plain", "offset": "mine"})
        assert await _receive(layer, "lobby-1") == {"type": "plain", "offset": "mine"}
        with pytest.raises(HistoryError, match="no history is kept for group 'lobby'"):
            await layer.history("lobby")
        with pytest.raises(HistoryError, match="keep_history"):
            await layer.stream_position("lobby")

    async def test_history_is_kept_without_members(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        await _send_many(layer, "room.empty", 4)
        page = await layer.history("room.empty")
        assert [e["i"] for e in page.events] == [0, 1, 2, 3]
        assert _offsets(page.events) == [1, 2, 3, 4]
        assert page.position.offset == 4
        assert all(e["group"] == "room.empty" and e["type"] == "m" for e in page.events)

    async def test_limit_gives_the_newest_or_the_next(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        await _send_many(layer, "room.lim", 6)
        newest = await layer.history("room.lim", limit=2)
        assert _offsets(newest.events) == [5, 6]
        assert (await layer.history("room.lim", limit=0)).events == []
        position = newest.position
        after = await layer.history("room.lim", StreamPosition(2, position.epoch), limit=2)
        assert _offsets(after.events) == [3, 4]
        assert after.position == position

    async def test_since_gives_exactly_what_came_after(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        await _send_many(layer, "room.since", 5)
        epoch = (await layer.stream_position("room.since")).epoch
        page = await layer.history("room.since", StreamPosition(2, epoch))
        assert _offsets(page.events) == [3, 4, 5]
        assert [e["i"] for e in page.events] == [2, 3, 4]
        assert (await layer.history("room.since", StreamPosition(5, epoch))).events == []
        everything = await layer.history("room.since", StreamPosition(0, epoch))
        assert _offsets(everything.events) == [1, 2, 3, 4, 5]

    async def test_size_prunes_and_resume_past_it_is_a_gap(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history={"room.*": HistoryPolicy(size=3)})
        await _send_many(layer, "room.small", 7)
        page = await layer.history("room.small")
        assert _offsets(page.events) == [5, 6, 7]
        epoch = page.position.epoch
        # After 4: 5, 6, 7 are all kept.
        ok = await layer.history("room.small", StreamPosition(4, epoch))
        assert _offsets(ok.events) == [5, 6, 7]
        # After 3: 4 was pruned, so the exact answer cannot be given.
        with pytest.raises(HistoryGap) as caught:
            await layer.history("room.small", StreamPosition(3, epoch))
        assert caught.value.reason == "too_old"
        assert caught.value.position == StreamPosition(7, epoch)
        assert "room.small" in str(caught.value)

    async def test_ttl_prunes_by_age(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history={"room.*": HistoryPolicy(size=100, ttl=0.3)})
        await _send_many(layer, "room.ttl", 2)
        await asyncio.sleep(0.6)
        await _send_many(layer, "room.ttl", 1, start=2)
        page = await layer.history("room.ttl")
        assert _offsets(page.events) == [3]
        with pytest.raises(HistoryGap) as caught:
            await layer.history("room.ttl", StreamPosition(1, page.position.epoch))
        assert caught.value.reason == "too_old"
        await asyncio.sleep(0.6)
        assert (await layer.history("room.ttl")).events == []
        assert (await layer.stream_position("room.ttl")).offset == 3  # offsets never go back
        with pytest.raises(HistoryGap, match="no longer kept"):
            await layer.history("room.ttl", StreamPosition(2, page.position.epoch))

    async def test_another_epoch_is_a_gap(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        await _send_many(layer, "room.ep", 2)
        with pytest.raises(HistoryGap) as caught:
            await layer.history("room.ep", StreamPosition(1, "not-this-epoch"))
        assert caught.value.reason == "epoch"
        assert caught.value.position.offset == 2

    async def test_a_future_offset_is_a_gap(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        await _send_many(layer, "room.fut", 2)
        epoch = (await layer.stream_position("room.fut")).epoch
        with pytest.raises(HistoryGap) as caught:
            await layer.history("room.fut", StreamPosition(3, epoch))
        assert caught.value.reason == "future"
        assert caught.value.position == StreamPosition(2, epoch)

    @pytest.mark.parametrize(
        "since, match",
        [
            (StreamPosition(-1, "e"), "0 or more, not -1"),
            (StreamPosition("3", "e"), "offset is an int, not str"),  # type: ignore[arg-type]
            (StreamPosition(True, "e"), "offset is an int, not bool"),
            (StreamPosition(1, 5), "epoch is a str, not int"),  # type: ignore[arg-type]
            ((1, "e"), "StreamPosition"),
        ],
    )
    async def test_malformed_positions_are_refused(
        self, make_layer: MakeLayer, since: Any, match: str
    ) -> None:
        layer = await make_layer(history=ROOMS)
        await _send_many(layer, "room.bad", 1)
        with pytest.raises(HistoryError, match=match):
            await layer.history("room.bad", since)

    @pytest.mark.parametrize("limit", [-1, 1.5, "2", True])
    async def test_malformed_limits_are_refused(self, make_layer: MakeLayer, limit: Any) -> None:
        layer = await make_layer(history=ROOMS)
        with pytest.raises(HistoryError, match="limit"):
            await layer.history("room.bad", limit=limit)

    async def test_bad_group_names_are_refused(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        with pytest.raises(TypeError, match="Group name"):
            await layer.history("room with space")

    @pytest.mark.parametrize("key", ["offset", "epoch"])
    async def test_a_message_with_stream_keys_is_refused(
        self, make_layer: MakeLayer, key: str
    ) -> None:
        layer = await make_layer(history=ROOMS)
        await layer.group_add("room.keys", "keys-1")
        with pytest.raises(HistoryError, match=f"may not have an '{key}' key"):
            await layer.group_send("room.keys", {"type": "x", key: 1})
        assert await _nothing_arrives(layer, "keys-1")
        assert (await layer.stream_position("room.keys")).offset == 0

    async def test_broadcasts_are_recorded_with_offsets(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        mine = await layer.new_channel()
        await layer.group_add("room.bc", mine)
        await layer.group_send("room.bc", broadcast_event(json={"n": 1}))
        await layer.group_send("room.bc", broadcast_event(bytes=b"\x00\x01"))
        _, first = await asyncio.wait_for(layer.receive_local(), WAIT)
        assert first["type"] == BROADCAST and first["text"] == '{"n":1}'
        assert first["offset"] == 1
        page = await layer.history("room.bc")
        assert [(e["type"], e["offset"]) for e in page.events] == [(BROADCAST, 1), (BROADCAST, 2)]
        assert page.events[1]["bytes"] == b"\x00\x01"

    async def test_first_matching_pattern_wins(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(
            history={"room.vip.*": HistoryPolicy(size=1), "room.*": HistoryPolicy(size=5)}
        )
        assert layer.history_policy("room.vip.x") == HistoryPolicy(size=1)
        assert layer.history_policy("room.y") == HistoryPolicy(size=5)
        assert layer.history_policy("other") is None
        layer.keep_history("other", HistoryPolicy(size=2, ttl=60))
        assert layer.history_policy("other") == HistoryPolicy(size=2, ttl=60)
        await _send_many(layer, "room.vip.x", 3)
        assert _offsets((await layer.history("room.vip.x")).events) == [3]

    async def test_flush_loses_the_history_and_says_so(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(history=ROOMS)
        await _send_many(layer, "room.fl", 3)
        before = await layer.stream_position("room.fl")
        await layer.flush()
        await _send_many(layer, "room.fl", 1)
        with pytest.raises(HistoryGap):
            await layer.history("room.fl", StreamPosition(2, before.epoch))
        page = await layer.history("room.fl")
        assert [e["i"] for e in page.events] == [0]

    async def test_presence_diffs_are_not_history(self, make_layer: MakeLayer) -> None:
        # (Every shipped layer offers both; a layer with history only drops this test.)
        layer = await make_layer(history=ROOMS)
        mine = await layer.new_channel()
        await layer.group_add("room.pd", mine)
        await layer.presence_join("room.pd", mine, "ada", {})
        _, diff = await asyncio.wait_for(layer.receive_local(), WAIT)
        assert diff["type"] == PRESENCE_DIFF
        assert "offset" not in diff
        assert (await layer.stream_position("room.pd")).offset == 0


class PresenceContract:
    """Who is in a group, one entry per key, diffs on join and leave."""

    async def test_extension_is_announced(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        assert "presence" in layer.extensions

    async def test_join_lists_and_announces(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        watcher, ada = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("pr.room", watcher)
        assert await layer.presence("pr.room") == {}
        await layer.presence_join("pr.room", ada, "ada", {"nick": "Ada"})
        assert await layer.presence("pr.room") == {"ada": [{"nick": "Ada", "ref": ada}]}
        diff = await _receive(layer, watcher)
        assert diff == {
            "type": PRESENCE_DIFF,
            "group": "pr.room",
            "joins": {"ada": [{"nick": "Ada", "ref": ada}]},
            "leaves": {},
            "first": True,
        }

    async def test_one_key_on_two_channels_is_one_entry(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        watcher = await layer.new_channel()
        tab1, tab2 = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("pr.tabs", watcher)
        await layer.presence_join("pr.tabs", tab1, "ada", {"tab": 1})
        await layer.presence_join("pr.tabs", tab2, "ada", {"tab": 2})
        listing = await layer.presence("pr.tabs")
        assert list(listing) == ["ada"]
        assert sorted(m["tab"] for m in listing["ada"]) == [1, 2]
        assert {m["ref"] for m in listing["ada"]} == {tab1, tab2}
        first, second = await _receive(layer, watcher), await _receive(layer, watcher)
        assert first.get("first") is True
        assert "first" not in second and second["joins"] == {"ada": [{"tab": 2, "ref": tab2}]}
        await layer.presence_leave("pr.tabs", tab1)
        left_one = await _receive(layer, watcher)
        assert left_one["leaves"] == {"ada": [{"tab": 1, "ref": tab1}]}
        assert "last" not in left_one
        await layer.presence_leave("pr.tabs", tab2)
        left_all = await _receive(layer, watcher)
        assert left_all["leaves"] == {"ada": [{"tab": 2, "ref": tab2}]}
        assert left_all.get("last") is True
        assert await layer.presence("pr.tabs") == {}

    async def test_rejoin_updates_the_meta(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        watcher, ada = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("pr.upd", watcher)
        await layer.presence_join("pr.upd", ada, "ada", {"status": "away"})
        await layer.presence_join("pr.upd", ada, "ada", {"status": "here"})
        assert await layer.presence("pr.upd") == {"ada": [{"status": "here", "ref": ada}]}
        await _receive(layer, watcher)
        update = await _receive(layer, watcher)
        assert update["joins"] == {"ada": [{"status": "here", "ref": ada}]}
        assert update["leaves"] == {"ada": [{"status": "away", "ref": ada}]}
        assert "first" not in update and "last" not in update

    async def test_leave_of_an_absent_channel_is_silent(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        watcher = await layer.new_channel()
        await layer.group_add("pr.none", watcher)
        await layer.presence_leave("pr.none", "specific.nobody!x")
        await layer.presence_leave("pr.never", watcher)
        assert await _nothing_arrives(layer, watcher)

    async def test_groups_are_separate(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        ada = await layer.new_channel()
        await layer.presence_join("pr.one", ada, "ada", {})
        assert await layer.presence("pr.two") == {}
        assert list(await layer.presence("pr.one")) == ["ada"]

    async def test_the_listing_is_a_copy(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        ada = await layer.new_channel()
        meta = {"nick": "Ada"}
        await layer.presence_join("pr.copy", ada, "ada", meta)
        meta["nick"] = "changed after joining"
        listing = await layer.presence("pr.copy")
        listing["ada"][0]["nick"] = "changed by a reader"
        assert await layer.presence("pr.copy") == {"ada": [{"nick": "Ada", "ref": ada}]}

    @pytest.mark.parametrize(
        "key, meta, match",
        [
            ("", {}, "1 to 200 characters"),
            ("k" * 201, {}, "1 to 200 characters"),
            (7, {}, "presence key"),
            ("ada", ["not", "a", "dict"], "must be a dict, not list"),
            ("ada", {"ref": "mine"}, "'ref' key"),
            ("ada", {"blob": "x" * (MAX_PRESENCE_META + 1)}, "the limit is 4096"),
            ("ada", {"when": object()}, "cannot be encoded"),
        ],
    )
    async def test_bad_presence_info_is_refused(
        self, make_layer: MakeLayer, key: Any, meta: Any, match: str
    ) -> None:
        layer = await make_layer()
        watcher, ada = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("pr.bad", watcher)
        with pytest.raises(PresenceError, match=match):
            await layer.presence_join("pr.bad", ada, key, meta)
        assert await layer.presence("pr.bad") == {}
        assert await _nothing_arrives(layer, watcher)

    async def test_meta_at_the_limit_is_taken(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        ada = await layer.new_channel()
        await layer.presence_join("pr.big", ada, "ada", {"blob": "x" * (MAX_PRESENCE_META - 16)})
        assert len((await layer.presence("pr.big"))["ada"]) == 1

    async def test_flush_forgets_presence(self, make_layer: MakeLayer) -> None:
        layer = await make_layer()
        ada = await layer.new_channel()
        await layer.presence_join("pr.flush", ada, "ada", {})
        await layer.flush()
        assert await layer.presence("pr.flush") == {}

    async def test_presence_timeout_is_an_option(self, make_layer: MakeLayer) -> None:
        layer = await make_layer(presence_timeout=2)
        assert layer.presence_timeout == 2.0


def _with_options(url: str, **options: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


class CrossProcessStreamsContract:
    """History and presence shared by real OS processes. Needs a ``layer_url`` fixture."""

    #: Seconds after which a killed process's presence must be gone (the layer's option).
    PRESENCE_TIMEOUT = 1.0

    @pytest.fixture
    def shared_url(self, layer_url: str) -> str:
        return _with_options(
            layer_url, history="room.*:1000", presence_timeout=str(self.PRESENCE_TIMEOUT)
        )

    @pytest.fixture
    async def open_layer(self, shared_url: str) -> AsyncIterator[Callable[[], BaseLayer]]:
        made: list[BaseLayer] = []

        def make() -> BaseLayer:
            layer = get_layer(shared_url)
            made.append(layer)
            return layer

        yield make
        for layer in made:
            await layer.close()

    async def test_processes_share_one_sequence_of_offsets(
        self, shared_url: str, open_layer: Callable[[], BaseLayer]
    ) -> None:
        layer = open_layer()
        count = 150
        peers = [Peer(shared_url, "send", group="room.x", count=count, tag=f"p{n}") for n in (1, 2)]
        for peer in peers:
            await peer.start()
        for peer in peers:
            await peer.ready()
        for i in range(count):
            await layer.group_send("room.x", {"type": "peer.msg", "tag": "parent", "i": i})
        for peer in peers:
            assert await peer.result() == count
            await peer.stop()
        page = await layer.history("room.x")
        assert _offsets(page.events) == list(range(1, 3 * count + 1))
        for tag in ("parent", "p1", "p2"):
            mine = [e["i"] for e in page.events if e["tag"] == tag]
            assert mine == list(range(count)), f"{tag}'s messages out of order or missing"
        assert page.position.offset == 3 * count

    async def test_another_process_reads_the_same_history(
        self, shared_url: str, open_layer: Callable[[], BaseLayer]
    ) -> None:
        layer = open_layer()
        await _send_many(layer, "room.read", 5)
        position = await layer.stream_position("room.read")
        async with Peer(shared_url, "history", group="room.read") as peer:
            await peer.ready()
            whole = await peer.result()
        assert [e["offset"] for e in whole["events"]] == [1, 2, 3, 4, 5]
        assert whole["position"] == [5, position.epoch]
        async with Peer(
            shared_url, "history", group="room.read", offset=3, epoch=position.epoch
        ) as peer:
            await peer.ready()
            after = await peer.result()
        assert [e["i"] for e in after["events"]] == [3, 4]

    async def test_live_events_carry_offsets_to_other_processes(
        self, shared_url: str, open_layer: Callable[[], BaseLayer]
    ) -> None:
        layer = open_layer()
        async with Peer(shared_url, "watch", group="room.live", count=3) as peer:
            await peer.ready()
            await _send_many(layer, "room.live", 3)
            got = await peer.result()
        epoch = (await layer.stream_position("room.live")).epoch
        assert [(e["i"], e["offset"], e["epoch"]) for e in got] == [
            (0, 1, epoch),
            (1, 2, epoch),
            (2, 3, epoch),
        ]

    async def test_presence_across_processes(
        self, shared_url: str, open_layer: Callable[[], BaseLayer]
    ) -> None:
        layer = open_layer()
        watcher = await layer.new_channel()
        await layer.group_add("room.pres", watcher)
        async with Peer(
            shared_url, "present", group="room.pres", key="bob", meta={"nick": "Bob"}
        ) as peer:
            channel = await peer.ready()
            assert await layer.presence("room.pres") == {"bob": [{"nick": "Bob", "ref": channel}]}
            joined = await _receive(layer, watcher)
            assert joined["joins"] == {"bob": [{"nick": "Bob", "ref": channel}]}
            assert joined.get("first") is True
            assert await peer.result() == channel  # leaves when told to
        left = await _receive(layer, watcher)
        assert left["leaves"] == {"bob": [{"nick": "Bob", "ref": channel}]}
        assert left.get("last") is True
        assert await layer.presence("room.pres") == {}

    async def test_a_killed_process_leaves_within_the_timeout(
        self, shared_url: str, open_layer: Callable[[], BaseLayer]
    ) -> None:
        layer = open_layer()
        watcher = await layer.new_channel()
        await layer.group_add("room.kill", watcher)
        peer = await Peer(shared_url, "present", group="room.kill", key="eve", meta={}).start()
        try:
            channel = await peer.ready()
            assert (await _receive(layer, watcher))["joins"] == {"eve": [{"ref": channel}]}
            peer.kill()
            killed = time.monotonic()
            # Within the timeout plus one sweep interval (a third of it), with slack for a
            # loaded machine: the leave arrives as a diff, and the listing is empty.
            bound = self.PRESENCE_TIMEOUT * (1 + 1 / 3) + 3.0
            left = await _receive(layer, watcher, timeout=bound)
            assert left["leaves"] == {"eve": [{"ref": channel}]}
            assert left.get("last") is True
            assert time.monotonic() - killed < bound
            assert await layer.presence("room.kill") == {}
        finally:
            await peer.stop()


async def check_not_supported(layer: BaseLayer) -> None:
    """Assert that *layer* refuses history and presence with :class:`NotSupported`.

    For a layer that offers neither: every method names the layer and the capability.
    """
    name = type(layer).__name__
    for call, capability in (
        (layer.history("g"), "history"),
        (layer.stream_position("g"), "history"),
        (layer.presence_join("g", "c", "k", {}), "presence"),
        (layer.presence_leave("g", "c"), "presence"),
        (layer.presence("g"), "presence"),
    ):
        with pytest.raises(NotSupported, match=f"{name} does not support {capability}"):
            await call
    with pytest.raises(NotSupported, match=f"{name} does not support history"):
        layer.keep_history("g", HistoryPolicy(size=1))
