"""Behaviour specific to the SQLite layer, in one process."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chanlite_sqlite import SQLiteLayer

from chanlite.broadcast import broadcast_event
from chanlite.layers import BlockingSends

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def layer(tmp_path: Path) -> AsyncIterator[SQLiteLayer]:
    made = SQLiteLayer(tmp_path / "layer.db")
    yield made
    await made.close()


def _query(db: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def test_group_message_is_one_row_whatever_the_member_count(layer: SQLiteLayer) -> None:
    other = SQLiteLayer(layer.path)
    try:
        theirs = [await other.new_channel() for _ in range(40)]
        for channel in theirs:
            await other.group_add("big", channel)
        await layer.group_send("big", {"type": "news"})
        rows = _query(layer.path, "SELECT channel, owner FROM chanlite_messages WHERE grp = 'big'")
        assert rows == [("", "")]
        channels, message = await asyncio.wait_for(other.receive_local(), 5)
        assert sorted(channels) == sorted(theirs) and message == {"type": "news"}
    finally:
        await other.close()


async def test_sync_calls_from_threads_reach_this_process_too(layer: SQLiteLayer) -> None:
    mine = await layer.new_channel()
    await layer.group_add("room", mine)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            layer.group_send_blocking("room", {"type": "from.thread"})
            layer.send_blocking(mine, {"type": "direct.from.thread"})
            layer.group_send_blocking("room", broadcast_event(bytes=b"\x00frame"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert errors == []
    got = [await asyncio.wait_for(layer.receive_local(), 5) for _ in range(3)]
    assert [(list(channels), message) for channels, message in got] == [
        ([mine], {"type": "from.thread"}),
        ([mine], {"type": "direct.from.thread"}),
        ([mine], {"type": "chanlite.broadcast", "bytes": b"\x00frame"}),
    ]
    assert isinstance(layer, BlockingSends)


async def test_old_sync_names_warn_and_still_work(layer: SQLiteLayer) -> None:
    mine = await layer.new_channel()
    await layer.group_add("room", mine)
    with pytest.warns(DeprecationWarning, match="use send_blocking"):
        await asyncio.to_thread(layer.sync_send, mine, {"type": "a"})
    with pytest.warns(DeprecationWarning, match="use group_send_blocking"):
        await asyncio.to_thread(layer.sync_group_send, "room", {"type": "b"})
    with pytest.warns(DeprecationWarning, match="chanlite.sync.broadcast"):
        await asyncio.to_thread(layer.sync_broadcast, "room", text="c")
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="exactly one of"):
        layer.sync_broadcast("room")
    got = [(await asyncio.wait_for(layer.receive_local(), 5))[1] for _ in range(3)]
    assert got == [{"type": "a"}, {"type": "b"}, {"type": "chanlite.broadcast", "text": "c"}]


async def test_close_unregisters_the_process_and_its_memberships(tmp_path: Path) -> None:
    layer = SQLiteLayer(tmp_path / "close.db")
    mine = await layer.new_channel()
    await layer.group_add("room", mine)
    await layer.group_add("room", "plain-member")
    db = layer.path
    assert _query(db, "SELECT count(*) FROM chanlite_processes") == [(1,)]
    await layer.close()
    assert _query(db, "SELECT count(*) FROM chanlite_processes") == [(0,)]
    assert _query(db, "SELECT channel FROM chanlite_groups") == [("plain-member",)]
    with pytest.raises(RuntimeError, match="closed"):
        await layer.group_send("room", {"type": "x"})


def test_event_loops_may_come_and_go(tmp_path: Path) -> None:
    # asgiref's async_to_sync runs each call on a fresh loop when none is running.
    layer = SQLiteLayer(tmp_path / "loops.db")
    for i in range(3):
        asyncio.run(layer.send("jobs", {"type": "job", "i": i}))

    async def drain() -> list[int]:
        got = [(await asyncio.wait_for(layer.receive("jobs"), 5))["i"] for _ in range(3)]
        await layer.close()
        return got

    assert asyncio.run(drain()) == [0, 1, 2]


async def test_drops_for_local_members_are_counted_where_they_live(tmp_path: Path) -> None:
    sender = SQLiteLayer(tmp_path / "drops.db")
    holder = SQLiteLayer(tmp_path / "drops.db", capacity=1)
    try:
        full, free = await holder.new_channel(), await holder.new_channel()
        await holder.group_add("busy", full)
        await holder.group_add("busy", free)
        await holder.send(full, {"type": "fill"})
        await sender.group_send("busy", {"type": "news"})

        async def counted() -> None:
            while holder.drops["busy"] != 1:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(counted(), 5)
        for expected in (([full], {"type": "fill"}), ([free], {"type": "news"})):
            channels, message = await asyncio.wait_for(holder.receive_local(), 5)
            assert (list(channels), message) == expected
    finally:
        await sender.close()
        await holder.close()


def test_a_layer_made_before_fork_gets_a_client_id_per_process(tmp_path: Path) -> None:
    import multiprocessing

    layer = SQLiteLayer(tmp_path / "fork.db")
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()

    def in_child() -> None:
        async def run() -> str:
            channel = await layer.new_channel()
            await layer.close()
            return channel

        channel = asyncio.run(run())
        child.send((layer.client_id, channel))

    proc = context.Process(target=in_child)
    proc.start()
    child_id, channel = parent.recv()
    proc.join(10)
    assert proc.exitcode == 0
    assert child_id != layer.client_id
    assert SQLiteLayer.owner_of(channel) == child_id


async def test_group_expiry_applies_to_members_in_other_processes(tmp_path: Path) -> None:
    sender = SQLiteLayer(tmp_path / "gexp.db")
    holder = SQLiteLayer(tmp_path / "gexp.db", group_expiry=0.3)
    try:
        stale, fresh = await holder.new_channel(), await holder.new_channel()
        await holder.group_add("room", stale)
        await asyncio.sleep(0.5)
        await holder.group_add("room", fresh)
        await sender.group_send("room", {"type": "hello"})
        channels, _ = await asyncio.wait_for(holder.receive_local(), 5)
        assert list(channels) == [fresh]
    finally:
        await sender.close()
        await holder.close()


async def test_a_call_cancelled_during_start_up_does_not_break_it(tmp_path: Path) -> None:
    layer = SQLiteLayer(tmp_path / "cancel.db")
    first = asyncio.ensure_future(layer.receive("jobs"))
    await asyncio.sleep(0)  # start-up has begun: the reader thread is opening the file
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await layer.send("jobs", {"type": "job"})
    assert (await asyncio.wait_for(layer.receive("jobs"), 5))["type"] == "job"
    await layer.close()


async def test_close_during_start_up_releases_everything(tmp_path: Path) -> None:
    layer = SQLiteLayer(tmp_path / "early.db")
    starting = asyncio.ensure_future(layer.group_add("g", "c"))
    await asyncio.sleep(0)
    await layer.close()
    await asyncio.gather(starting, return_exceptions=True)
    assert _query(layer.path, "SELECT count(*) FROM chanlite_processes") == [(0,)]
    assert f"chanlite-sqlite-{layer.client_id}" not in {t.name for t in threading.enumerate()}


async def test_a_group_with_many_plain_members(layer: SQLiteLayer) -> None:
    members = [f"worker-{i}" for i in range(1200)]
    await asyncio.gather(*(layer.group_add("crowd", member) for member in members))
    await layer.group_send("crowd", {"type": "all.hands"})
    rows = _query(
        layer.path, "SELECT count(*) FROM chanlite_messages WHERE channel LIKE 'worker-%'"
    )
    assert rows == [(1200,)]
    assert (await asyncio.wait_for(layer.receive("worker-1199"), 5))["type"] == "all.hands"
