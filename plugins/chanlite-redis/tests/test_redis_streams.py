"""History and presence on a real Redis: OS processes, lost keys, restarts, outages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from chanlite_redis import RedisLayer, RedisUnavailable
from peer_process import PeerProcess
from redis.asyncio import Redis
from redis.crc import key_slot

from chanlite.layers import (
    HistoryError,
    HistoryGap,
    HistoryPolicy,
    PresenceError,
    StreamPosition,
)

PEER = Path(__file__).with_name("streams_peer.py")
WAIT = 10.0


Spawn = Callable[..., Awaitable[PeerProcess]]


@pytest.fixture
async def spawn(redis_server: Any, prefix: str) -> AsyncIterator[Spawn]:
    peers: list[PeerProcess] = []

    async def start(presence_timeout: float = 30.0) -> PeerProcess:
        peer = await PeerProcess.start(PEER, redis_server.url, prefix, str(presence_timeout))
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        await peer.stop()


async def _history_layer(make: Any, **options: Any) -> RedisLayer:
    layer: RedisLayer = await make(history={"h.*": HistoryPolicy(1000)}, **options)
    return layer


async def _collect(layer: RedisLayer, channel: str, count: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(layer.receive(channel), WAIT) for _ in range(count)]


# -- history across processes ----------------------------------------------------------------


async def test_offsets_from_concurrent_processes_are_unique_and_contiguous(
    spawn: Spawn, make_redis_layer: Any
) -> None:
    layer = await _history_layer(make_redis_layer, capacity=1000)
    mine = await layer.new_channel()
    await layer.group_add("h.race", mine)
    a, b = await spawn(), await spawn()
    await a.command(op="send_many", group="h.race", count=200, tag="a")
    await b.command(op="send_many", group="h.race", count=200, tag="b")
    got = await _collect(layer, mine, 400)
    await a.next_event("done")
    await b.next_event("done")
    # Live delivery is in offset order, one offset per message, none skipped.
    assert [m["offset"] for m in got] == list(range(1, 401))
    assert len({m["epoch"] for m in got}) == 1
    for tag in "ab":
        assert [m["i"] for m in got if m["tag"] == tag] == list(range(200))
    page = await layer.history("h.race")
    assert page.events == got
    assert page.position == StreamPosition(400, got[0]["epoch"])


async def test_resume_while_another_process_sends_has_no_gap_or_duplicate(
    spawn: Spawn, make_redis_layer: Any
) -> None:
    # Room for every live message that arrives while the history is read: a full member
    # would (rightly) have messages dropped.
    layer = await _history_layer(make_redis_layer, capacity=1000)
    sender = await spawn()
    await sender.run(op="send_many", group="h.live", count=50, tag="before")
    seen = await layer.history("h.live")
    since = seen.position
    assert since.offset == 50
    await sender.command(op="send_many", group="h.live", count=300, tag="during")
    await asyncio.sleep(0.02)  # the sender is under way while we join
    mine = await layer.new_channel()
    await layer.group_add("h.live", mine)  # live messages buffer from here on
    page = await layer.history("h.live", since)
    delivered = [m["offset"] for m in page.events]
    last = delivered[-1] if delivered else since.offset
    while last < 350:
        message = await asyncio.wait_for(layer.receive(mine), WAIT)
        if message["offset"] <= last:
            continue  # already served from history
        delivered.append(message["offset"])
        last = message["offset"]
    assert delivered == list(range(51, 351))
    await sender.next_event("done")


async def test_remote_and_encrypted_members_get_offsets(
    make_redis_layer: Any,
) -> None:
    keys = {"symmetric_encryption_keys": ["secret"]}
    layer = await _history_layer(make_redis_layer, **keys)
    other = await _history_layer(make_redis_layer, **keys)
    remote = await other.new_channel()
    # A plain name and another layer object's channel: both served by queued copies.
    await layer.group_add("h.mixed", "plain-member")
    await layer.group_add("h.mixed", remote)
    await layer.group_send("h.mixed", {"type": "x", "n": 1})
    plain = await asyncio.wait_for(layer.receive("plain-member"), WAIT)
    queued = await asyncio.wait_for(other.receive(remote), WAIT)
    assert plain == queued
    assert plain["offset"] == 1 and plain["group"] == "h.mixed" and plain["n"] == 1
    assert (await other.history("h.mixed")).events == [plain]


async def test_history_keys_of_a_group_share_one_slot(
    make_redis_layer: Any, redis_server: Any, prefix: str
) -> None:
    layer = await _history_layer(make_redis_layer)
    channel = await layer.new_channel()
    await layer.group_send("h.slot", {"type": "x"})
    await layer.presence_join("h.slot", channel, "ada", {})
    client = Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*h.slot*")]
    finally:
        await client.aclose()
    assert len(keys) >= 6
    assert len({key_slot(key) for key in keys}) == 1


# -- lost keys, restarts, outages -----------------------------------------------------------


async def test_deleted_stream_key_starts_a_new_epoch(
    make_redis_layer: Any, redis_server: Any, prefix: str
) -> None:
    layer = await _history_layer(make_redis_layer)
    for i in range(3):
        await layer.group_send("h.lost", {"type": "x", "i": i})
    before = await layer.stream_position("h.lost")
    client = Redis.from_url(redis_server.url)
    try:
        assert await client.delete(f"{prefix}hs:{{h.lost}}") == 1  # evicted, say
    finally:
        await client.aclose()
    with pytest.raises(HistoryGap) as caught:
        await layer.history("h.lost", StreamPosition(1, before.epoch))
    assert caught.value.reason == "epoch"
    now = caught.value.position
    assert now.offset == 0 and now.epoch != before.epoch
    await layer.group_send("h.lost", {"type": "x", "i": 3})
    page = await layer.history("h.lost", now)
    assert [(m["i"], m["offset"], m["epoch"]) for m in page.events] == [(3, 1, now.epoch)]


async def test_deleted_epoch_key_starts_a_new_epoch_without_old_messages(
    make_redis_layer: Any, redis_server: Any, prefix: str
) -> None:
    layer = await _history_layer(make_redis_layer)
    await layer.group_send("h.meta", {"type": "x", "i": 0})
    before = await layer.stream_position("h.meta")
    client = Redis.from_url(redis_server.url)
    try:
        assert await client.delete(f"{prefix}hm:{{h.meta}}") == 1
    finally:
        await client.aclose()
    await layer.group_send("h.meta", {"type": "x", "i": 1})
    page = await layer.history("h.meta")
    assert [(m["i"], m["offset"]) for m in page.events] == [(1, 1)]
    assert page.position.epoch != before.epoch
    with pytest.raises(HistoryGap, match="another epoch"):
        await layer.history("h.meta", before)


async def test_redis_restart_mid_resume_is_an_epoch_gap_never_a_silent_one(
    own_redis: Any, prefix: str
) -> None:
    layer = RedisLayer(
        own_redis.url, prefix=prefix, timeout=1.0, history={"h.*": HistoryPolicy(100)}
    )
    try:
        channel = await layer.new_channel()
        for i in range(5):
            await layer.group_send("h.restart", {"type": "x", "i": i})
        position = await layer.stream_position("h.restart")
        own_redis.stop()
        for call in (
            layer.history("h.restart", StreamPosition(2, position.epoch)),
            layer.stream_position("h.restart"),
            layer.group_send("h.restart", {"type": "x"}),
            layer.presence_join("h.restart", channel, "ada", {}),
            layer.presence("h.restart"),
        ):
            with pytest.raises(RedisUnavailable, match="unreachable"):
                await asyncio.wait_for(call, WAIT)
        own_redis.start()  # without persistence: everything is gone
        with pytest.raises(HistoryGap) as caught:
            await layer.history("h.restart", StreamPosition(2, position.epoch))
        assert caught.value.reason == "epoch"
        assert caught.value.position.offset == 0
        assert caught.value.position.epoch != position.epoch
        await layer.group_send("h.restart", {"type": "x", "i": 5})
        page = await layer.history("h.restart", caught.value.position)
        assert [(m["i"], m["offset"]) for m in page.events] == [(5, 1)]
    finally:
        await layer.close()


async def test_age_limit_prunes_from_the_head(make_redis_layer: Any) -> None:
    layer: RedisLayer = await make_redis_layer(history={"h.*": HistoryPolicy(10, ttl=0.3)})
    await layer.group_send("h.age", {"type": "x", "i": 0})
    await layer.group_send("h.age", {"type": "x", "i": 1})
    start = (await layer.stream_position("h.age")).epoch
    await asyncio.sleep(0.5)
    await layer.group_send("h.age", {"type": "x", "i": 2})
    page = await layer.history("h.age")
    assert [m["offset"] for m in page.events] == [3]
    with pytest.raises(HistoryGap) as caught:
        await layer.history("h.age", StreamPosition(0, start))
    assert caught.value.reason == "too_old"
    assert (await layer.history("h.age", StreamPosition(2, start))).events == page.events
    await asyncio.sleep(0.5)
    # Everything aged out: still the same epoch, and the position is kept.
    empty = await layer.history("h.age")
    assert empty.events == [] and empty.position == StreamPosition(3, start)
    assert (await layer.history("h.age", StreamPosition(3, start))).events == []


async def test_misuse_is_refused_precisely(make_redis_layer: Any) -> None:
    layer = await _history_layer(make_redis_layer)
    channel = await layer.new_channel()
    with pytest.raises(HistoryError, match="no history is kept for group 'plain'"):
        await layer.history("plain")
    with pytest.raises(HistoryError, match="0 or more"):
        await layer.history("h.x", StreamPosition(-1, "e"))
    with pytest.raises(HistoryError, match="offset"):
        await layer.group_send("h.x", {"type": "x", "offset": 3})
    with pytest.raises(PresenceError, match="4096"):
        await layer.presence_join("h.x", channel, "ada", {"blob": "x" * 5000})
    with pytest.raises(PresenceError, match="cannot be encoded"):
        await layer.presence_join("h.x", channel, "ada", {"when": object()})
    with pytest.raises(PresenceError, match="1 to 200"):
        await layer.presence_join("h.x", channel, "", {})
    assert await layer.presence("h.x") == {}


# -- presence across processes ------------------------------------------------------------------


async def _diffs(layer: RedisLayer, channel: str, within: float) -> list[dict[str, Any]]:
    """The presence diffs *channel* receives during *within* seconds."""
    got: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + within
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return got
        try:
            message = await asyncio.wait_for(layer.receive(channel), left)
        except asyncio.TimeoutError:
            return got
        if message["type"] == "presence.diff":
            got.append(message)


async def test_killed_process_leaves_presence_once_within_the_timeout(
    spawn: Spawn, make_redis_layer: Any
) -> None:
    timeout = 0.9
    layer: RedisLayer = await make_redis_layer(presence_timeout=timeout)
    mine = await layer.new_channel()
    await layer.group_add("room", mine)
    await layer.presence_join("room", mine, "carol", {"n": "c"})
    doomed, witness = await spawn(timeout), await spawn(timeout)
    for peer, key in ((doomed, "ada"), (witness, "bob")):
        await peer.run(op="group_add", group="room")
        await peer.run(op="presence_join", group="room", key=key, meta={"n": key})
    listing = await layer.presence("room")
    assert listing == {
        "carol": [{"n": "c", "ref": mine}],
        "ada": [{"n": "ada", "ref": doomed.ready["channel"]}],
        "bob": [{"n": "bob", "ref": witness.ready["channel"]}],
    }
    joins = await _diffs(layer, mine, 0.2)
    assert [list(d["joins"]) for d in joins] == [["carol"], ["ada"], ["bob"]]
    doomed.kill()
    # The background refresh of a live process sweeps it: its leave arrives within the
    # timeout plus one refresh interval (plus slack for a busy machine).
    leave = await asyncio.wait_for(layer.receive(mine), timeout * 4 / 3 + 2.0)
    leaves = [leave, *await _diffs(layer, mine, timeout)]  # and no second one later
    assert leaves == [
        {
            "type": "presence.diff",
            "group": "room",
            "joins": {},
            "leaves": {"ada": [{"n": "ada", "ref": doomed.ready["channel"]}]},
            "last": True,
        }
    ]
    # The other live process got it exactly once too.
    await witness.run(op="group_add", group="room")  # a round trip: what came has come
    diffs = [m for m in witness.received if m["type"] == "presence.diff" and m["leaves"]]
    assert [list(d["leaves"]) for d in diffs] == [["ada"]]
    assert set(await layer.presence("room")) == {"carol", "bob"}


async def test_a_process_swept_while_alive_joins_again(
    make_redis_layer: Any, redis_server: Any, prefix: str
) -> None:
    layer: RedisLayer = await make_redis_layer(presence_timeout=0.6)
    watcher: RedisLayer = await make_redis_layer(presence_timeout=0.6)
    channel, seen = await layer.new_channel(), await watcher.new_channel()
    await watcher.group_add("room", seen)
    await layer.presence_join("room", channel, "ada", {"n": 1})
    assert (await _diffs(watcher, seen, 0.2))[0]["first"] is True
    client = Redis.from_url(redis_server.url)
    try:  # as if Redis had lost its data (restart without persistence)
        await client.delete(*[k async for k in client.scan_iter(match=f"{prefix}*")])
    finally:
        await client.aclose()
    assert await watcher.presence("room") == {}
    # At its next refresh (every timeout / 3) the process finds itself missing.
    diffs = await _diffs(watcher, seen, 1.0)
    assert [(list(d["joins"]), d.get("first")) for d in diffs] == [(["ada"], True)]
    assert await watcher.presence("room") == {"ada": [{"n": 1, "ref": channel}]}


async def test_close_leaves_at_once(make_redis_layer: Any) -> None:
    layer: RedisLayer = await make_redis_layer()
    watcher: RedisLayer = await make_redis_layer()
    channel, seen = await layer.new_channel(), await watcher.new_channel()
    await watcher.group_add("room", seen)
    await layer.presence_join("room", channel, "ada", {})
    await layer.presence_join("room.2", channel, "ada", {})
    await layer.close()
    diffs = await _diffs(watcher, seen, 0.3)
    assert [(list(d["joins"]), list(d["leaves"])) for d in diffs] == [
        (["ada"], []),
        ([], ["ada"]),
    ]
    assert await watcher.presence("room") == {}
    assert await watcher.presence("room.2") == {}


async def test_sync_callers_record_history_and_read_presence(make_redis_layer: Any) -> None:
    layer = await _history_layer(make_redis_layer)
    mine = await layer.new_channel()
    await layer.group_add("h.sync", mine)

    def sync_side() -> tuple[Any, Any]:
        # As chanlite.sync does for a layer without blocking sends: a loop per call.
        async_to_sync(layer.presence_join)("h.sync", mine, "ada", {"n": 1})
        async_to_sync(layer.group_send)("h.sync", {"type": "x"})
        return async_to_sync(layer.history)("h.sync"), async_to_sync(layer.presence)("h.sync")

    page, listing = await asyncio.wait_for(asyncio.to_thread(sync_side), WAIT)
    await asyncio.sleep(0)
    # The owning loop refreshes the entry a sync call made.
    assert layer._presence_task is not None and not layer._presence_task.done()
    assert [(m["type"], m["offset"]) for m in page.events] == [("x", 1)]
    assert listing == {"ada": [{"n": 1, "ref": mine}]}
    diff = await asyncio.wait_for(layer.receive(mine), WAIT)
    assert diff["type"] == "presence.diff" and diff["first"] is True
    assert await asyncio.wait_for(layer.receive(mine), WAIT) == page.events[0]


async def test_an_entry_sealed_with_another_key_is_skipped_with_a_log(
    make_redis_layer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ours: RedisLayer = await make_redis_layer(symmetric_encryption_keys=["ours"])
    theirs: RedisLayer = await make_redis_layer(symmetric_encryption_keys=["theirs"])
    mine, other = await ours.new_channel(), await theirs.new_channel()
    await ours.presence_join("room", mine, "ada", {"n": 1})
    await theirs.presence_join("room", other, "bob", {"n": 2})
    with caplog.at_level("ERROR", logger="chanlite.layers.redis"):
        assert await ours.presence("room") == {"ada": [{"n": 1, "ref": mine}]}
    assert f"unreadable presence entry of {other!r}" in caplog.text


async def test_a_sending_process_gets_the_group_in_offset_order(
    spawn: Spawn, make_redis_layer: Any
) -> None:
    # The process sends too: its own messages must not overtake another process's
    # earlier ones on the way to its members.
    layer = await _history_layer(make_redis_layer, capacity=2000)
    mine = await layer.new_channel()
    await layer.group_add("h.both", mine)
    other = await spawn()
    await other.command(op="send_many", group="h.both", count=300, tag="peer")
    for i in range(300):
        await layer.group_send("h.both", {"type": "x", "tag": "here", "i": i})
    got = await _collect(layer, mine, 600)
    await other.next_event("done")
    assert [m["offset"] for m in got] == list(range(1, 601))
    for tag in ("peer", "here"):
        assert [m["i"] for m in got if m["tag"] == tag] == list(range(300))


async def test_messages_missed_while_pubsub_reconnects_are_filled_from_the_stream(
    make_redis_layer: Any, redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await _history_layer(make_redis_layer)
    sender = await _history_layer(make_redis_layer)
    mine = await receiver.new_channel()
    await receiver.group_add("h.gap", mine)
    for i in range(3):
        await sender.group_send("h.gap", {"type": "x", "i": i})
    assert [m["offset"] for m in await _collect(receiver, mine, 3)] == [1, 2, 3]
    client = Redis.from_url(redis_server.url)
    try:
        # Redis drops the pub/sub connections (as it does a consumer over its output
        # buffer limit); what is published before the listener is back is not heard.
        with caplog.at_level("INFO", logger="chanlite.layers.redis"):
            await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            for i in range(3, 20):
                await sender.group_send("h.gap", {"type": "x", "i": i})
            got = await _collect(receiver, mine, 17)
    finally:
        await client.aclose()
    assert [m["offset"] for m in got] == list(range(4, 21))
    # (How many were missed depends on how fast the listener came back.)
    assert re.search(r"delivered \d+ messages missed", caplog.text)
    await sender.group_send("h.gap", {"type": "x", "i": 20})
    assert (await asyncio.wait_for(receiver.receive(mine), WAIT))["offset"] == 21
    assert await _nothing_more(receiver, mine)


async def _nothing_more(layer: RedisLayer, channel: str) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), 0.3)
    except asyncio.TimeoutError:
        return True
    return False
