"""History in the file: restarts, replaced files, retention, locks, old files, the resume race."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from chanlite_sqlite import DatabaseFileError, SQLiteLayer
from chanlite_sqlite.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from sqlite_harness import Peer

from chanlite.layers import HistoryGap, HistoryPolicy, MsgpackCodec, StreamPosition

pytestmark = pytest.mark.timeout(60)

ROOMS = {"room.*": HistoryPolicy(size=100_000)}
MakeLayer = Callable[..., Awaitable[SQLiteLayer]]


@pytest.fixture
async def make_layer(db: Path) -> AsyncIterator[MakeLayer]:
    made: list[SQLiteLayer] = []

    async def make(**options: Any) -> SQLiteLayer:
        options.setdefault("history", ROOMS)
        layer = SQLiteLayer(db, **options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


def _scalar(db: Path, sql: str, *args: object) -> Any:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchone()[0]
    finally:
        conn.close()


def _offsets(events: list[dict[str, Any]]) -> list[int]:
    return [event["offset"] for event in events]


async def _send(layer: SQLiteLayer, group: str, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await layer.group_send(group, {"type": "m", "i": i})


async def test_history_survives_a_restart(make_layer: MakeLayer) -> None:
    first = await make_layer()
    await _send(first, "room.r", 5)
    before = await first.stream_position("room.r")
    await first.close()

    again = await make_layer()  # a new server process would make a new layer object
    assert await again.stream_position("room.r") == before == StreamPosition(5, before.epoch)
    page = await again.history("room.r", StreamPosition(2, before.epoch))
    assert [(e["i"], e["offset"], e["epoch"]) for e in page.events] == [
        (i, i + 1, before.epoch) for i in (2, 3, 4)
    ]
    await again.group_send("room.r", {"type": "m", "i": 5})
    assert await again.stream_position("room.r") == StreamPosition(6, before.epoch)


async def test_an_empty_stream_keeps_its_epoch_in_the_file(make_layer: MakeLayer) -> None:
    # A position read before anything was sent stays valid for the first messages, in
    # another layer object too.
    reader = await make_layer()
    start = await reader.stream_position("room.quiet")
    assert start.offset == 0
    sender = await make_layer()
    await _send(sender, "room.quiet", 2)
    assert _offsets((await reader.history("room.quiet", start)).events) == [1, 2]


async def test_a_replaced_file_is_a_new_epoch(make_layer: MakeLayer, db: Path) -> None:
    old = await make_layer()
    await _send(old, "room.x", 3)
    position = await old.stream_position("room.x")
    await old.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    new = await make_layer()
    with pytest.raises(HistoryGap) as gap:
        await new.history("room.x", position)
    assert gap.value.reason == "epoch"
    assert gap.value.position.offset == 0 and gap.value.position.epoch != position.epoch
    await _send(new, "room.x", 1)
    assert await new.stream_position("room.x") == StreamPosition(1, gap.value.position.epoch)


async def test_a_file_deleted_under_a_running_layer_is_a_new_epoch(
    make_layer: MakeLayer, db: Path
) -> None:
    layer = await make_layer()
    await _send(layer, "room.y", 3)
    position = await layer.stream_position("room.y")
    # Someone deletes the file (rm chat.db*) and another process starts on a new one.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink()
    other = await make_layer()
    await _send(other, "room.y", 1)
    with pytest.raises(HistoryGap) as gap:
        await layer.history("room.y", position)
    assert gap.value.reason == "epoch"
    assert gap.value.position == await other.stream_position("room.y")
    assert gap.value.position.offset == 1


async def test_size_retention_deletes_rows_and_resume_past_it_is_too_old(
    make_layer: MakeLayer, db: Path
) -> None:
    layer = await make_layer(history={"room.*": HistoryPolicy(size=5)}, heartbeat=0.05)
    await _send(layer, "room.s", 20)
    # Sends delete in steps, the heartbeat deletes the rest.
    for _ in range(100):
        if _scalar(db, "SELECT count(*) FROM chanlite_history WHERE grp = 'room.s'") == 5:
            break
        await asyncio.sleep(0.05)
    assert _scalar(db, "SELECT count(*) FROM chanlite_history WHERE grp = 'room.s'") == 5
    epoch = (await layer.stream_position("room.s")).epoch
    assert _offsets((await layer.history("room.s")).events) == [16, 17, 18, 19, 20]
    assert _offsets((await layer.history("room.s", StreamPosition(15, epoch))).events) == [
        16,
        17,
        18,
        19,
        20,
    ]
    with pytest.raises(HistoryGap) as gap:
        await layer.history("room.s", StreamPosition(14, epoch))
    assert gap.value.reason == "too_old" and gap.value.position == StreamPosition(20, epoch)


async def test_age_retention_is_applied_by_the_heartbeat(make_layer: MakeLayer, db: Path) -> None:
    layer = await make_layer(history={"room.*": HistoryPolicy(size=100, ttl=0.3)}, heartbeat=0.05)
    await _send(layer, "room.t", 3)
    epoch = (await layer.stream_position("room.t")).epoch
    assert len((await layer.history("room.t")).events) == 3
    await asyncio.sleep(0.4)
    # Expired messages are gone for readers at once, and from the file by the heartbeat.
    assert (await layer.history("room.t")).events == []
    with pytest.raises(HistoryGap) as gap:
        await layer.history("room.t", StreamPosition(0, epoch))
    assert gap.value.reason == "too_old"
    for _ in range(100):
        if _scalar(db, "SELECT count(*) FROM chanlite_history") == 0:
            break
        await asyncio.sleep(0.05)
    assert _scalar(db, "SELECT pruned FROM chanlite_streams WHERE grp = 'room.t'") == 3
    assert _scalar(db, "SELECT count(*) FROM chanlite_history") == 0
    # The stream goes on from where it was.
    await _send(layer, "room.t", 1)
    assert _offsets((await layer.history("room.t", StreamPosition(3, epoch))).events) == [4]


async def test_blocking_sends_record_history(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    member = await layer.new_channel()
    await layer.group_add("room.b", member)
    await layer.group_add("room.b", "room-b-plain")
    await asyncio.to_thread(layer.group_send_blocking, "room.b", {"type": "m", "i": 0})
    await layer.group_send("room.b", {"type": "m", "i": 1})
    await asyncio.to_thread(layer.group_send_blocking, "room.b", {"type": "m", "i": 2})
    page = await layer.history("room.b")
    assert [(e["i"], e["offset"]) for e in page.events] == [(0, 1), (1, 2), (2, 3)]
    live = [await asyncio.wait_for(layer.receive(member), 5) for _ in range(3)]
    plain = [await asyncio.wait_for(layer.receive("room-b-plain"), 5) for _ in range(3)]
    for got in (live, plain):
        assert [(e["i"], e["offset"], e["group"]) for e in got] == [
            (0, 1, "room.b"),
            (1, 2, "room.b"),
            (2, 3, "room.b"),
        ]


async def test_reads_do_not_wait_for_a_writer(make_layer: MakeLayer, db: Path) -> None:
    layer = await make_layer(timeout=0.3)
    await _send(layer, "room.w", 2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        assert _offsets((await layer.history("room.w")).events) == [1, 2]
        # A group with no stream yet needs a write to keep its epoch: a precise error.
        with pytest.raises(
            DatabaseFileError, match=r"is locked by another process \(waited 0.3 s\)"
        ):
            await layer.stream_position("room.new")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (await layer.stream_position("room.new")).offset == 0


async def test_a_locked_file_during_a_history_read_is_a_precise_error(
    make_layer: MakeLayer, db: Path
) -> None:
    writer = await make_layer()
    await _send(writer, "room.l", 2)
    await writer.close()
    # Another program opens the file in exclusive locking mode and keeps its lock.
    locked = threading.Event()
    release = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert await asyncio.to_thread(locked.wait, 5)
        reader = await make_layer(timeout=0.2)
        with pytest.raises(DatabaseFileError) as error:
            await reader.history("room.l")
        assert str(error.value) == (
            f"Channel layer database {db} is locked by another process (waited 0.2 s). "
            "Another program holds a write lock on it; close it, or raise the layer's "
            "timeout option."
        )
    finally:
        release.set()
        await asyncio.to_thread(thread.join, 5)
    assert _offsets((await reader.history("room.l")).events) == [1, 2]


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_file_is_migrated_in_place(
    make_layer: MakeLayer, db: Path, version: int
) -> None:
    assert SCHEMA_VERSION == 3
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for step in range(1, version + 1):
        conn.executescript(MIGRATIONS[step])
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.executemany(
        "INSERT INTO chanlite_meta (key, value) VALUES (?, ?)",
        [("application", "chanlite-sqlite"), ("schema_version", str(version))],
    )
    conn.execute(
        "INSERT INTO chanlite_groups (grp, channel, owner, expires) "
        "VALUES ('room.old', 'old-plain', '', 1e12)"
    )
    kept = 0
    if version == 2:  # history written by that release goes on in the same epoch
        conn.execute("INSERT INTO chanlite_streams VALUES ('room.old', 'e1', 2, 0, NULL)")
        for pos in (1, 2):
            conn.execute(
                "INSERT INTO chanlite_history VALUES ('room.old', ?, 0, ?)",
                (pos, MsgpackCodec().encode({"type": "m", "i": pos - 3})),
            )
        kept = 2
    conn.close()

    layer = await make_layer()
    await layer.group_send("room.old", {"type": "m", "i": 0})
    # The membership made before the upgrade still works, and history is kept.
    assert (await asyncio.wait_for(layer.receive("old-plain"), 5))["offset"] == kept + 1
    page = await layer.history("room.old")
    assert [(e["i"], e["offset"]) for e in page.events] == [
        (offset - kept - 1, offset) for offset in range(1, kept + 2)
    ]
    if version == 2:
        assert page.position.epoch == "e1"
    assert _scalar(db, "SELECT value FROM chanlite_meta WHERE key = 'schema_version'") == "3"


async def test_resume_while_another_process_sends(make_layer: MakeLayer, db: Path) -> None:
    """The resume algorithm against a real sending process: group_add first, then the
    history after the position, then the live events past the last offset read. However
    the sends interleave with the join, the result is every offset once, in order."""
    layer = await make_layer(capacity=100_000)  # the test reads the live events last
    sender = await Peer.start(db, history="room.*:100000")
    try:
        total = 3000
        await sender.call("burst", group="room.race", count=total, window=8)
        resumed = []
        for threshold in (100, 800, 1600):  # three joins at different moments of the burst
            await sender.wait_for(lambda e, t=threshold: e.get("event") == "sent" and e["i"] >= t)
            since = await layer.stream_position("room.race")
            await sender.wait_for(
                lambda e, t=threshold: e.get("event") == "sent" and e["i"] >= t + 200
            )
            channel = await layer.new_channel()
            await layer.group_add("room.race", channel)  # first: live events buffer from now
            page = await layer.history("room.race", since)
            resumed.append((channel, since, page))
        got: dict[str, list[int]] = {}
        last: dict[str, int] = {}
        for channel, since, page in resumed:
            got[channel] = _offsets(page.events)
            last[channel] = page.events[-1]["offset"] if page.events else since.offset
        while not all(value == total for value in last.values()):
            channels, event = await asyncio.wait_for(layer.receive_local(), 10)
            for channel in channels:
                if event["offset"] > last[channel]:  # skip what the history gave
                    got[channel].append(event["offset"])
                    last[channel] = event["offset"]
        for channel, since, _ in resumed:
            assert got[channel] == list(range(since.offset + 1, total + 1))
    finally:
        await sender.stop()


async def test_a_sender_killed_mid_burst_leaves_no_hole(make_layer: MakeLayer, db: Path) -> None:
    layer = await make_layer()
    victim = await Peer.start(db, history="room.*:100000")
    try:
        await victim.call("burst", group="room.crash", count=1_000_000, window=64)
        await victim.wait_for(lambda e: e.get("event") == "sent" and e["i"] >= 300)
        await victim.kill()
    finally:
        if victim.proc.returncode is None:
            await victim.kill()
    sent = {e["i"] for e in victim.events if e.get("event") == "sent"}
    page = await layer.history("room.crash")
    # Every offset given has its message (each is written in one statement), and every
    # send that returned before the kill is there.
    assert _offsets(page.events) == list(range(1, page.position.offset + 1))
    assert sent <= {e["i"] for e in page.events}
    assert _scalar(db, "PRAGMA integrity_check") == "ok"


async def test_members_get_offsets_in_order_while_two_processes_send(
    make_layer: MakeLayer, db: Path
) -> None:
    """A member in a sending process sees every offset once, in order: its own process's
    messages never overtake an earlier one another process committed (a resuming client
    skips what is older than the last offset it saw, so that would be a loss)."""
    layer = await make_layer(capacity=100_000)
    member = await layer.new_channel()
    await layer.group_add("room.order", member)
    other = await Peer.start(db, history="room.*:100000")
    try:
        await other.call("burst", group="room.order", count=1500, window=8)
        numbers = iter(range(1500))

        async def send() -> None:
            for i in numbers:
                await layer.group_send("room.order", {"type": "mine", "i": i})

        await asyncio.gather(*(send() for _ in range(8)))
        await other.wait_for(lambda e: e.get("event") == "sent" and e["i"] == 1499)
        offsets = []
        while len(offsets) < 3000:
            _, event = await asyncio.wait_for(layer.receive_local(), 10)
            offsets.append(event["offset"])
        assert offsets == list(range(1, 3001))
    finally:
        await other.stop()


async def test_own_history_messages_reach_local_members_without_a_read_back(
    make_layer: MakeLayer, db: Path
) -> None:
    """The sender's own members get its history message at commit, in order: its row is
    marked as the sender's, so its reader skips it rather than read and decode it again."""
    layer = await make_layer()
    member = await layer.new_channel()
    await layer.group_add("room.own", member)
    await _send(layer, "room.own", 3)
    got = [await asyncio.wait_for(layer.receive(member), 5) for _ in range(3)]
    assert [(e["i"], e["offset"]) for e in got] == [(0, 1), (1, 2), (2, 3)]
    origins = _scalar(
        db, "SELECT group_concat(DISTINCT origin) FROM chanlite_messages WHERE grp = 'room.own'"
    )
    assert origins == layer.client_id


async def test_a_failed_history_send_does_not_hold_back_other_processes_messages(
    make_layer: MakeLayer, db: Path
) -> None:
    """Another process's messages to a group wait while this process writes to it (an own
    message may come first); a write that fails must let them go."""
    layer = await make_layer(timeout=0.3)
    other = await make_layer()
    member = await layer.new_channel()
    await layer.group_add("room.fail", member)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseFileError, match="locked"):
            await layer.group_send("room.fail", {"type": "m", "i": 0})
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    await other.group_send("room.fail", {"type": "m", "i": 1})
    got = await asyncio.wait_for(layer.receive(member), 5)
    assert (got["i"], got["offset"]) == (1, 1)
