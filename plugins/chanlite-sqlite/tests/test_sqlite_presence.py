"""Presence in the file: processes that die, close, or come back; batches of changes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chanlite_sqlite import SQLiteLayer
from sqlite_harness import Peer

from chanlite.layers import PRESENCE_DIFF

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 1.0  # presence_timeout of every process in these tests


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "presence.db"


@pytest.fixture
async def layer(db: Path) -> AsyncIterator[SQLiteLayer]:
    layer = SQLiteLayer(db, presence_timeout=TIMEOUT)
    yield layer
    await layer.close()


async def _diffs(layer: SQLiteLayer, channel: str, count: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(layer.receive(channel), 10) for _ in range(count)]


def _leaves(events: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(key, ref, last) of each leave diff, sorted."""
    return sorted(
        (key, meta["ref"], bool(event.get("last")))
        for event in events
        if event.get("type") == PRESENCE_DIFF
        for key, metas in event["leaves"].items()
        for meta in metas
    )


async def test_a_killed_process_leaves_once_for_every_survivor(
    layer: SQLiteLayer, db: Path
) -> None:
    victim = await Peer.start(db, presence_timeout=TIMEOUT)
    survivor = await Peer.start(db, presence_timeout=TIMEOUT)
    try:
        watcher = await layer.new_channel()
        await layer.group_add("room.k", watcher)
        peer_watcher = (await survivor.call("new_channel"))["channel"]
        await survivor.call("group_add", group="room.k", channel=peer_watcher)
        tabs = [(await victim.call("new_channel"))["channel"] for _ in range(3)]
        for tab, key in zip(tabs, ("ada", "ada", "bob"), strict=True):
            await victim.call("presence_join", group="room.k", channel=tab, key=key, meta={})
        assert len(await _diffs(layer, watcher, 3)) == 3
        assert sorted(await layer.presence("room.k")) == ["ada", "bob"]

        await victim.kill()
        killed = time.monotonic()
        left = await _diffs(layer, watcher, 3)
        assert time.monotonic() - killed < TIMEOUT * (1 + 1 / 3) + 3.0
        # One diff per entry; "last" only on ada's final meta and on bob's.
        ada_last = [item for item in _leaves(left) if item[0] == "ada"]
        assert sorted(last for _, _, last in ada_last) == [False, True]
        assert {ref for _, ref, _ in _leaves(left)} == set(tabs)
        assert [item for item in _leaves(left) if item[0] == "bob"] == [("bob", tabs[2], True)]
        assert await layer.presence("room.k") == {}

        # The other survivor got the same leaves, once each, though both processes sweep.
        def three_leaves(_: object) -> bool:
            return len(_leaves([e["message"] for e in survivor.local()])) >= 3

        await survivor.wait_for(three_leaves)
        await asyncio.sleep(TIMEOUT)  # a second sweep would have sent its diffs by now
        assert _leaves([e["message"] for e in survivor.local()]) == _leaves(left)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(watcher), 0.2)
    finally:
        if victim.proc.returncode is None:
            await victim.kill()
        await survivor.stop()


async def test_closing_announces_the_leaves_at_once(db: Path, layer: SQLiteLayer) -> None:
    watcher = await layer.new_channel()
    await layer.group_add("room.c", watcher)
    leaving = SQLiteLayer(db, presence_timeout=30)
    tab = await leaving.new_channel()
    await leaving.presence_join("room.c", tab, "ada", {"n": 1})
    assert (await _diffs(layer, watcher, 1))[0]["joins"] == {"ada": [{"n": 1, "ref": tab}]}
    await leaving.close()
    # Long before the 30 s timeout.
    left = await asyncio.wait_for(layer.receive(watcher), 5)
    assert left["leaves"] == {"ada": [{"n": 1, "ref": tab}]} and left["last"] is True
    assert await layer.presence("room.c") == {}


async def test_a_process_presumed_dead_announces_itself_again(db: Path, layer: SQLiteLayer) -> None:
    watcher = await layer.new_channel()
    await layer.group_add("room.p", watcher)
    paused = SQLiteLayer(db, presence_timeout=TIMEOUT)
    try:
        tab = await paused.new_channel()
        await paused.presence_join("room.p", tab, "ada", {})
        await _diffs(layer, watcher, 1)
        # What the others do to a process silent past the timeout (a debugger, a laptop
        # lid): its registration and entries go.
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("DELETE FROM chanlite_processes WHERE client_id = ?", (paused.client_id,))
        conn.execute("DELETE FROM chanlite_presence WHERE owner = ?", (paused.client_id,))
        conn.close()
        back = await asyncio.wait_for(layer.receive(watcher), 10)
        assert back["joins"] == {"ada": [{"ref": tab}]} and back["first"] is True
        assert await layer.presence("room.p") == {"ada": [{"ref": tab}]}
    finally:
        await paused.close()


async def test_changes_in_one_batch_keep_first_and_last_exact(layer: SQLiteLayer) -> None:
    watcher = await layer.new_channel()
    await layer.group_add("room.b", watcher)
    tabs = [await layer.new_channel() for _ in range(50)]
    # Issued together, they are written in a few transactions of many changes each.
    await asyncio.gather(*(layer.presence_join("room.b", t, "ada", {"t": t}) for t in tabs))
    joins = await _diffs(layer, watcher, 50)
    assert sum(bool(event.get("first")) for event in joins) == 1
    assert joins[0].get("first") is True
    assert len((await layer.presence("room.b"))["ada"]) == 50
    await asyncio.gather(
        *(layer.presence_leave("room.b", t) for t in tabs),
        layer.presence_leave("room.b", tabs[0]),  # twice: the second is silent
    )
    leaves = await _diffs(layer, watcher, 50)
    assert sum(bool(event.get("last")) for event in leaves) == 1
    assert leaves[-1].get("last") is True
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(watcher), 0.2)
    assert await layer.presence("room.b") == {}
