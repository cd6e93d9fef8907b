"""History and presence through the App: joins from a position, gaps, presence events."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from chanlite import App, HistoryError, NotSupported, PresenceError, StreamPosition, WebSocket
from chanlite.layers import LayerConfigError
from chanlite.layers.base import BaseLayer, Event
from chanlite.layers.memory import MemoryLayer
from chanlite.layers.streams import HistoryPage
from chanlite.testing import TestClient
from chanlite.testing.websocket import WebSocketTestSession
from tests import streams_app
from tests.server.conftest import running

Client = WebSocketTestSession


def fresh_app(layer: Any = "memory://") -> App:
    """The streams test app with a layer of its own (the module's app is shared)."""
    app = App(layer=layer)
    app.history("room.*", size=1000)
    app.add_route(streams_app.app.routes[0])
    return app


async def until(ws: Client, key: str) -> dict[str, Any]:
    while True:
        frame = await ws.receive_json(timeout=5)
        if key in frame:
            return dict(frame)


async def messages(ws: Client, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await ws.receive_json(timeout=5)
        if "msg" in frame:
            got.append(frame)
    return got


async def say(app: App, group: str, *texts: str) -> None:
    for text in texts:
        await app.group_send(group, {"type": "chat.line", "text": text})


# -- history and resume -------------------------------------------------------------------


async def test_live_messages_carry_offset_epoch_and_group() -> None:
    app = fresh_app()
    async with TestClient(app) as client, client.websocket("/room/a") as ws:
        assert (await until(ws, "joined"))["joined"] is None  # a plain join
        await say(app, "room.a", "one", "two")
        got = await messages(ws, 2)
        epoch = (await app.stream_position("room.a")).epoch
        assert [(m["msg"], m["offset"], m["epoch"], m["group"]) for m in got] == [
            ("one", 1, epoch, "room.a"),
            ("two", 2, epoch, "room.a"),
        ]


async def test_a_latecomer_sees_the_last_messages_then_live_ones() -> None:
    app = fresh_app()
    async with TestClient(app) as client:
        await say(app, "room.late", *[f"m{i}" for i in range(10)])
        async with client.websocket("/room/late", params={"last": "3"}) as ws:
            joined = await until(ws, "joined")
            assert joined["joined"][0] == 10
            await say(app, "room.late", "live")
            got = await messages(ws, 4)
    assert [m["msg"] for m in got] == ["m7", "m8", "m9", "live"]
    assert [m["offset"] for m in got] == [8, 9, 10, 11]


async def test_a_reconnect_fills_its_gap_exactly() -> None:
    app = fresh_app()
    async with TestClient(app) as client:
        async with client.websocket("/room/r") as ws:
            await until(ws, "joined")
            await say(app, "room.r", "a", "b")
            seen = await messages(ws, 2)
        await say(app, "room.r", "c", "d", "e")  # said while the client was away
        last = seen[-1]
        params = {"offset": str(last["offset"]), "epoch": last["epoch"]}
        async with client.websocket("/room/r", params=params) as ws:
            joined = await until(ws, "joined")
            assert joined["joined"][0] == 5
            await say(app, "room.r", "f")
            got = await messages(ws, 4)
    assert [m["msg"] for m in got] == ["c", "d", "e", "f"]
    assert [m["offset"] for m in got] == [3, 4, 5, 6]
    assert app.stats.events_replayed == 3


async def test_resume_at_the_end_replays_nothing() -> None:
    app = fresh_app()
    async with TestClient(app) as client:
        await say(app, "room.end", "x")
        position = await app.stream_position("room.end")
        params = {"offset": str(position.offset), "epoch": position.epoch}
        async with client.websocket("/room/end", params=params) as ws:
            await until(ws, "joined")
            await say(app, "room.end", "y")
            assert [m["msg"] for m in await messages(ws, 1)] == ["y"]


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"offset": "1", "epoch": "another-server"}, "epoch"),
        ({"offset": "99"}, "future"),  # epoch filled in by the test
        ({"offset": "0"}, "too_old"),
    ],
)
async def test_a_position_that_cannot_be_served_is_a_gap_event(
    params: dict[str, str], reason: str
) -> None:
    app = App(layer="memory://")
    app.history("room.*", size=3)
    app.add_route(streams_app.app.routes[0])
    async with TestClient(app) as client:
        await say(app, "room.g", *[f"m{i}" for i in range(6)])
        position = await app.stream_position("room.g")
        params = {"epoch": position.epoch, **params, "last": "2"}
        async with client.websocket("/room/g", params=params) as ws:
            gap = await until(ws, "gap")
            assert gap == {"gap": reason, "offset": 6, "epoch": position.epoch}
            # Then the newest 2 (asked for with last=2), then live ones.
            await say(app, "room.g", "live")
            got = await messages(ws, 3)
    assert [m["msg"] for m in got] == ["m4", "m5", "live"]


@pytest.mark.parametrize(
    "params, error, detail",
    [
        ({"offset": "-1", "epoch": "e"}, "HistoryError", "0 or more, not -1"),
        ({"last": "-2"}, "HistoryError", "limit must be None or an int of 0 or more"),
        ({"key": ""}, "PresenceError", "1 to 200 characters"),
    ],
)
async def test_bad_join_input_is_a_precise_error(
    params: dict[str, str], error: str, detail: str
) -> None:
    app = fresh_app()
    async with TestClient(app) as client, client.websocket("/room/bad", params=params) as ws:
        frame = await until(ws, "error")
        assert frame["error"] == error
        assert detail in frame["detail"]
    assert app.layer.history_policy("room.bad") is not None
    assert await app.presence("room.bad") == {}


async def test_joining_a_group_without_history_from_a_position_is_refused() -> None:
    app = App(layer="memory://")
    errors: list[BaseException] = []

    @app.websocket("/plain")
    async def plain(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.join("lobby", last=5)
        except HistoryError as exc:
            errors.append(exc)
        assert ws.groups == frozenset()  # refused before joining anything

    async with TestClient(app) as client, client.websocket("/plain"):
        pass
    assert "no history is kept for group 'lobby'" in str(errors[0])


async def test_history_since_and_its_errors() -> None:
    app = fresh_app()
    await say(app, "room.h", "a", "b", "c")
    page = await app.history_since("room.h")
    assert [e["text"] for e in page.events] == ["a", "b", "c"]
    after = await app.history_since("room.h", StreamPosition(1, page.position.epoch))
    assert [e["text"] for e in after.events] == ["b", "c"]
    with pytest.raises(HistoryError, match="no history is kept for group 'lobby'"):
        await app.history_since("lobby")
    with pytest.raises(HistoryError, match="0 or more"):
        await app.history_since("room.h", StreamPosition(-5, page.position.epoch))


def test_history_declarations_are_checked_at_once() -> None:
    app = App(layer="memory://")
    with pytest.raises(LayerConfigError, match="can never match a group name"):
        app.history("room/*")
    with pytest.raises(LayerConfigError, match="at least 1"):
        app.history("room.*", size=0)
    with pytest.raises(LayerConfigError, match="positive number"):
        app.history("room.*", ttl=-1)


class PlainLayer(MemoryLayer):
    """A layer that keeps neither history nor presence."""

    extensions = ["groups", "flush"]

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        return await BaseLayer.history(self, group, since, limit)

    async def presence(self, group: str) -> dict[str, list[dict[str, Any]]]:
        return await BaseLayer.presence(self, group)


async def test_a_layer_without_the_capabilities_is_named() -> None:
    app = App(layer=PlainLayer())
    with pytest.raises(NotSupported, match="PlainLayer does not support history"):
        app.history("room.*")
    with pytest.raises(NotSupported, match="PlainLayer does not support presence"):
        await app.presence("room.x")
    errors: list[str] = []

    @app.websocket("/room/{name}")
    async def room(ws: WebSocket, name: str) -> None:
        await ws.accept()
        for kwargs in ({"last": 1}, {"presence": ("ada", {})}):
            try:
                await ws.join("room.x", **kwargs)  # type: ignore[arg-type]
            except NotSupported as exc:
                errors.append(str(exc))

    async with TestClient(app) as client, client.websocket("/room/x"):
        pass
    assert errors == [
        "PlainLayer does not support history: cannot join 'room.x' from a position",
        "PlainLayer does not support presence: cannot announce a presence in 'room.x'",
    ]


# -- live events the layer dropped for a full connection ----------------------------------


def slow_room_app(size: int) -> App:
    """A room whose ``on`` handler takes a while per event, on a layer with room for 2
    events per channel: a burst of sends fills the connection's channel and the layer
    drops the rest for it (counting them), while the history keeps them all."""
    app = App(layer="memory://?capacity=2")
    app.history("room.*", size=size)

    @app.websocket("/slow")
    async def slow(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("room.slow")
        await ws.send_json({"joined": True})
        async for _ in ws.iter_text():
            pass

    @slow.on("chat.line")
    async def line(ws: WebSocket, event: dict[str, Any]) -> None:
        await asyncio.sleep(0.005)
        await ws.send_json({"msg": event["text"], "offset": event["offset"]})

    @slow.on("history.gap")
    async def gap(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_json({"gap": event["reason"], "offset": event["offset"]})

    return app


async def test_events_dropped_for_a_full_connection_are_handled_from_the_history() -> None:
    app = slow_room_app(size=100)
    total = 40
    async with TestClient(app) as client, client.websocket("/slow") as ws:
        await until(ws, "joined")
        await say(app, "room.slow", *[str(i) for i in range(total)])
        layer = app.layer
        assert isinstance(layer, MemoryLayer)
        dropped = layer.drops["room.slow"]
        assert dropped > 0  # the layer did drop some for this connection (and said so)
        got = await messages(ws, total - dropped)  # what reached it, with jumps between
        # The next event of the group shows the jump in its offsets: what was dropped is
        # read from the history and handled first, in order.
        await say(app, "room.slow", "next")
        got += await messages(ws, dropped + 1)
    assert [m["msg"] for m in got] == [str(i) for i in range(total)] + ["next"]
    assert [m["offset"] for m in got] == list(range(1, total + 2))
    assert app.stats.events_refetched == dropped


async def test_dropped_events_the_history_no_longer_has_are_a_gap_event() -> None:
    app = slow_room_app(size=2)
    total = 40
    frames: list[dict[str, Any]] = []
    async with TestClient(app) as client, client.websocket("/slow") as ws:
        await until(ws, "joined")
        await say(app, "room.slow", *[str(i) for i in range(total)])
        layer = app.layer
        assert isinstance(layer, MemoryLayer)
        frames += await messages(ws, total - layer.drops["room.slow"])
        await say(app, "room.slow", "next")
        while frames[-1].get("msg") != "next":
            frames.append(await ws.receive_json(timeout=5))
    assert [f["gap"] for f in frames if "gap" in f] == ["too_old"]
    # Every offset was handled, or lies in the run a history.gap said was lost (between
    # the offsets handled before and after it); none twice, none out of order.
    accounted: list[int] = []
    told = False
    for frame in frames:
        if "gap" in frame:
            told = True
        elif "msg" in frame:
            if told:
                accounted += range(accounted[-1] + 1, frame["offset"])
                told = False
            accounted.append(frame["offset"])
    assert accounted == list(range(1, total + 2))


# -- presence -----------------------------------------------------------------------------


async def test_presence_is_per_key_and_announced_once() -> None:
    app = fresh_app()
    async with TestClient(app) as client:
        async with client.websocket("/room/p", params={"key": "bob"}) as bob:
            await until(bob, "joined")
            assert (await until(bob, "presence.join"))["presence.join"] == "bob"  # itself
            async with client.websocket("/room/p", params={"key": "ada"}) as ada1:
                await until(ada1, "joined")
                joined = await until(bob, "presence.join")
                assert joined["presence.join"] == "ada"
                assert joined["meta"]["nick"] == "ada" and "ref" in joined["meta"]
                async with client.websocket("/room/p", params={"key": "ada"}) as ada2:
                    await until(ada2, "joined")
                    await bob.send_json({"presence": True})
                    listing = (await until(bob, "presence"))["presence"]
                    assert sorted(listing) == ["ada", "bob"]
                    assert len(listing["ada"]) == 2  # two tabs, one entry
                    assert len({m["ref"] for m in listing["ada"]}) == 2
                # ada's second tab closed: ada is still here, nothing is announced.
                await bob.send_json({"presence": True})
                frame = await bob.receive_json(timeout=5)
                assert "presence" in frame, f"a second tab announced something: {frame}"
                assert len(frame["presence"]["ada"]) == 1
            # ada's last tab closed: ada left.
            assert (await until(bob, "presence.leave"))["presence.leave"] == "ada"
        assert await app.presence("room.p") == {}


async def test_leaving_the_group_withdraws_presence() -> None:
    app = fresh_app()
    async with TestClient(app) as client:
        async with (
            client.websocket("/room/lv", params={"key": "bob"}) as bob,
            client.websocket("/room/lv", params={"key": "ada"}) as ada,
        ):
            await until(bob, "joined")
            await until(ada, "joined")
            await ada.send_json({"leave": True})
            await until(ada, "left")
            assert (await until(bob, "presence.leave"))["presence.leave"] == "ada"
            assert list(await app.presence("room.lv")) == ["bob"]


async def test_raw_diffs_reach_an_on_presence_diff_handler() -> None:
    app = App(layer="memory://")
    diffs: list[Event] = []

    @app.websocket("/t")
    async def topic(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("topic", presence=("u1", {"a": 1}))
        async for _ in ws.iter_text():
            pass

    @topic.on("presence.diff")
    async def diff(ws: WebSocket, event: Event) -> None:
        diffs.append(event)
        await ws.send_text("diff")

    async with TestClient(app) as client, client.websocket("/t") as ws:
        assert await ws.receive_text(timeout=5) == "diff"
    assert diffs[0]["joins"]["u1"][0]["a"] == 1 and diffs[0]["first"] is True


# -- sync senders -------------------------------------------------------------------------


async def test_sync_senders_write_history_and_read_presence() -> None:
    app = fresh_app()
    async with TestClient(app) as client:
        async with client.websocket("/room/s", params={"key": "ada"}) as ws:
            await until(ws, "joined")

            def from_a_thread() -> tuple[HistoryPage, dict[str, Any]]:
                app.sync.group_send("room.s", {"type": "chat.line", "text": "from sync"})
                return app.sync.history("room.s"), app.sync.presence("room.s")

            page, present = await asyncio.to_thread(from_a_thread)
            got = await messages(ws, 1)
    assert got[0]["msg"] == "from sync" and got[0]["offset"] == 1
    assert [e["text"] for e in page.events] == ["from sync"]
    assert list(present) == ["ada"]


def test_sync_senders_of_an_app_that_is_not_serving_keep_its_history() -> None:
    app = App(layer="memory://?capacity=50")
    app.history("news", size=5)
    done = threading.Event()

    def script() -> None:
        app.sync.group_send("news", {"type": "n"})
        page = app.sync.history("news")
        assert [e["offset"] for e in page.events] == [1]
        done.set()

    thread = threading.Thread(target=script)
    thread.start()
    thread.join(10)
    assert done.is_set()


# -- the resume race, over real sockets ---------------------------------------------------


class LaggingLayer(MemoryLayer):
    """A memory layer with the timing of a layer shared by processes.

    History reads take a little while, and a send reaches members a little after it is
    recorded (as another process's write reaches this one's reader): sends land while a
    join reads history, and live copies of messages it already read arrive after it.
    """

    pending: set[asyncio.Future[None]] = set()

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        await asyncio.sleep(0.002)
        page = await super().history(group, since, limit)
        await asyncio.sleep(0.002)
        return page

    async def group_send(self, group: str, message: Event) -> None:
        policy = self.history_policy(group)
        if policy is None:
            await super().group_send(group, message)
            return
        recorded = self._streams.record(group, policy, message)
        asyncio.get_running_loop().call_later(0.003, self._later, group, recorded)

    def _later(self, group: str, message: Event) -> None:
        task = asyncio.ensure_future(self._fan_out(group, message))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)


async def _read_until(
    ws: ClientConnection, stop: int, got: list[dict[str, Any]], stop_early: int | None = None
) -> None:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if "msg" in frame:
            got.append(frame)
            if frame["msg"] == stop or (stop_early is not None and len(got) >= stop_early):
                return


@pytest.mark.parametrize("layer", [MemoryLayer, LaggingLayer])
async def test_reconnects_during_sends_miss_nothing_and_repeat_nothing(
    layer: type[MemoryLayer],
) -> None:
    app = fresh_app(layer())
    total = 600
    async with running(app) as server:
        url = f"ws://127.0.0.1:{server.bound_port}/room/race"
        sending = asyncio.Event()

        async def send_all() -> None:
            await sending.wait()
            for i in range(total):
                await app.group_send("room.race", {"type": "peer.msg", "tag": "s", "i": i})
                if i % 3 == 0:
                    await asyncio.sleep(0.0005)

        sender = asyncio.ensure_future(send_all())
        received: list[dict[str, Any]] = []
        async with connect(url) as ws:
            json.loads(await asyncio.wait_for(ws.recv(), 30))  # joined
            sending.set()
            await _read_until(ws, total - 1, received, stop_early=20)
        reconnects = 0
        while not received or received[-1]["msg"] != total - 1:
            last = received[-1]
            async with connect(f"{url}?offset={last['offset']}&epoch={last['epoch']}") as ws:
                reconnects += 1
                await _read_until(ws, total - 1, received, stop_early=len(received) + 37)
        await asyncio.wait_for(sender, 30)
    numbers = [m["msg"] for m in received]
    assert numbers == list(range(total)), "a message was missed, repeated or reordered"
    assert [m["offset"] for m in received] == list(range(1, total + 1))
    assert reconnects >= 5
    if layer is LaggingLayer:
        assert app.stats.duplicates_skipped > 0  # the window did drop late live copies


# -- the bookkeeping on its own ------------------------------------------------------------


def test_stash_overflow_reads_the_history_again() -> None:
    from chanlite.resume import DUPLICATE, PASS, STASHED, StreamJoins

    joins = StreamJoins(max_stash=2)
    joins.begin("g")

    def event(offset: int) -> Event:
        return {"type": "m", "group": "g", "offset": offset, "epoch": "e"}

    assert [joins.offer(event(n)) for n in (4, 5, 6)] == [STASHED] * 3
    assert joins.overflowed("g") and not joins.overflowed("g")
    assert joins.offer(event(7)) == STASHED
    # The re-read ended at 6: only 7 is newer, and the window closes with it.
    assert joins.finish("g", StreamPosition(6, "e")) == [event(7)]
    assert joins.offer(event(8)) == PASS
    assert not joins.active
    joins.begin("g")
    assert joins.finish("g", StreamPosition(9, "e")) == []
    assert joins.offer(event(9)) == DUPLICATE
    assert joins.offer({**event(9), "epoch": "new"}) == PASS  # another epoch: deliver
    assert not joins.active


def test_blocking_senders_on_sqlite_keep_the_apps_history(tmp_path: Any) -> None:
    """A script or a Django view (no event loop) sends into a history group of an App on
    the SQLite layer: the blocking path records it, and history and presence read back."""
    from chanlite import sync

    url = f"sqlite:///{tmp_path / 'sync.db'}"
    app = App(layer=url)
    app.history("room.*", size=10)

    def script() -> tuple[list[int], dict[str, Any], list[int]]:
        for n in range(3):
            app.sync.group_send("room.sync", {"type": "chat.line", "text": str(n)})
        page = app.sync.history("room.sync")
        # The URL form of the declaration, for code that has no App at hand.
        sync.group_send(f"{url}?history=room.*:10", "room.sync", {"type": "chat.line"})
        again = sync.SyncSender(f"{url}?history=room.*:10").history("room.sync")
        return (
            [e["offset"] for e in page.events],
            app.sync.presence("room.sync"),
            [e["offset"] for e in again.events],
        )

    try:
        offsets, present, after = script()
    finally:
        sync.close()
    assert offsets == [1, 2, 3]
    assert present == {}
    assert after == [1, 2, 3, 4]


async def test_presence_info_too_large_leaves_nothing_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(layer="memory://")
    seen: list[Any] = []

    @app.websocket("/p")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.join("room.big", presence=("ada", {"blob": "x" * 5000}))
        except PresenceError as exc:
            seen.append(str(exc))
        try:
            await ws.join("room.big", presence=("ada", {"when": object()}))
        except PresenceError as exc:
            seen.append(str(exc))
        seen.append(ws.groups)
        await ws.send_text("done")

    caplog.set_level(logging.DEBUG, "chanlite.websocket")
    async with TestClient(app) as client, client.websocket("/p") as ws:
        assert await ws.receive_text(timeout=5) == "done"
    assert "the limit is 4096" in seen[0]
    assert "cannot be encoded" in seen[1]
    assert seen[2] == frozenset()  # the group joined for it was left again
    assert await app.presence("room.big") == {}
    assert sum("Refused presence in 'room.big'" in r.getMessage() for r in caplog.records) == 2


def test_events_with_an_offset_key_of_their_own_pass() -> None:
    from chanlite.resume import PASS, STASHED, StreamJoins

    joins = StreamJoins(max_stash=10)
    joins.begin("g")
    assert joins.offer({"type": "x", "offset": 3, "group": ["not", "a", "name"]}) == PASS
    assert joins.offer({"type": "x", "offset": 3}) == PASS
    assert joins.offer({"type": "x", "offset": 3, "group": "other"}) == PASS
    assert joins.offer({"type": "x", "offset": 3, "group": "g", "epoch": "e"}) == STASHED


def test_jumps_in_a_joined_groups_offsets_are_where_events_were_missed() -> None:
    from chanlite.resume import StreamGaps

    def event(offset: int, epoch: str = "e", group: str = "g", **more: Any) -> Event:
        return {"type": "x", "group": group, "offset": offset, "epoch": epoch, **more}

    gaps = StreamGaps()
    assert gaps.check(event(7)) is None  # a group it did not join
    gaps.watch("g")
    assert gaps.check(event(7)) is None  # the first one sets where it is
    assert gaps.check(event(8)) is None
    assert gaps.check(event(11)) == StreamPosition(8, "e")  # 9 and 10 were missed
    assert gaps.check(event(12)) is None
    assert gaps.check(event(3, "other")) == StreamPosition(12, "e")  # the stream was lost
    assert gaps.check({**event(0, "other"), "type": "history.gap"}) is None
    assert gaps.check(event(9, "other")) is None  # after a gap notice: afresh
    assert gaps.check({"type": "x", "group": "g", "offset": "11"}) is None  # not a stream's
    gaps.forget("g")
    assert gaps.check(event(20)) is None
    gaps.watch("g")
    gaps.at("g", StreamPosition(30, "e"))  # a join read the history up to 30
    assert gaps.check(event(29)) is None  # its replay
    assert gaps.check(event(30)) is None
    assert gaps.check(event(32)) == StreamPosition(30, "e")


async def test_broadcasts_to_a_history_group_are_replayed_as_frames() -> None:
    app = App(layer="memory://")
    app.history("feed.*", size=10)

    @app.websocket("/feed")
    async def feed(ws: WebSocket) -> None:
        await ws.accept()
        await ws.join("feed.x", last=2)
        async for _ in ws.iter_text():
            pass

    async with TestClient(app) as client:
        for n in range(3):
            await app.broadcast("feed.x", json={"n": n})
        async with client.websocket("/feed") as ws:
            assert await ws.receive_json(timeout=5) == {"n": 1}
            assert await ws.receive_json(timeout=5) == {"n": 2}
            await app.broadcast("feed.x", text="live")
            assert await ws.receive_text(timeout=5) == "live"
    assert app.stats.events_replayed == 2
