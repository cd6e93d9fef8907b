"""Behaviour beyond the shared contract: processes, URLs, passwords, encryption, loops."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from chanlite_redis import RedisAuthError, RedisLayer, RedisUnavailable
from chanlite_redis.trailing import DELAY
from redis.asyncio import Redis

from chanlite.layers import ChannelFull, LayerConfigError, get_layer

WAIT = 5.0


async def _nothing_arrives(awaitable: Any, within: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(awaitable, within)
    except asyncio.TimeoutError:
        return True
    return False


# -- configuration ----------------------------------------------------------------------------


def test_url_options_and_password_are_read() -> None:
    layer = get_layer("redis://:s3cret@127.0.0.1:6390/3?capacity=7&expiry=2&prefix=app:")
    assert isinstance(layer, RedisLayer)
    assert (layer.capacity, layer.expiry, layer.prefix) == (7, 2.0, "app:")
    assert "s3cret" not in repr(layer)


def test_rediss_scheme_is_registered_and_uses_tls() -> None:
    layer = get_layer("rediss://localhost:6380/0?ssl_cert_reqs=none")
    assert isinstance(layer, RedisLayer)
    assert layer.url.startswith("rediss://")


def test_unknown_url_option_names_the_known_ones() -> None:
    with pytest.raises(LayerConfigError, match="capacity"):
        get_layer("redis://localhost/0?capactiy=3")


def test_channels_redis_style_hosts() -> None:
    assert RedisLayer(hosts=[("10.0.0.1", 6379)]).url == "redis://10.0.0.1:6379/0"
    assert RedisLayer(hosts=["redis://h:1/2"]).url == "redis://h:1/2"
    assert RedisLayer(hosts=[{"address": "redis://h:1/0"}]).url == "redis://h:1/0"
    with pytest.raises(LayerConfigError, match="one Redis server"):
        RedisLayer(hosts=["redis://a", "redis://b"])


# -- servers with a password -------------------------------------------------------------


async def test_password_url_works_and_a_wrong_one_fails_clearly(unstarted_redis: Any) -> None:
    server = unstarted_redis
    server.start("--requirepass", "pw-123")
    good = RedisLayer(f"redis://:pw-123@127.0.0.1:{server.port}/0")
    bad = RedisLayer(f"redis://:wrong@127.0.0.1:{server.port}/0", timeout=1)
    try:
        await good.send("guarded", {"type": "ok"})
        assert (await asyncio.wait_for(good.receive("guarded"), WAIT))["type"] == "ok"
        with pytest.raises(RedisUnavailable):
            await bad.send("guarded", {"type": "no"})
    finally:
        await good.close()
        await bad.close()


async def test_unreachable_server_fails_fast(make_redis_layer: Any) -> None:
    layer = RedisLayer("redis://127.0.0.1:1/0", timeout=1)
    with pytest.raises(RedisUnavailable, match="unreachable"):
        await asyncio.wait_for(layer.group_send("g", {"type": "x"}), WAIT)
    await layer.close()


# -- between layer objects (as between processes) -------------------------------------------


async def test_remote_send_capacity_and_expiry(make_redis_layer: Any) -> None:
    owner = await make_redis_layer(capacity=2, expiry=0.3)
    other = await make_redis_layer(capacity=2, expiry=0.3)
    channel = await owner.new_channel()
    # The owner is not reading yet: messages wait in its inbox in Redis.
    await other.send(channel, {"type": "a"})
    await other.send(channel, {"type": "b"})
    with pytest.raises(ChannelFull):
        await other.send(channel, {"type": "c"})
    await asyncio.sleep(0.5)  # both expire, which frees the capacity
    await other.send(channel, {"type": "fresh"})
    got, message = await asyncio.wait_for(owner.receive_local(), WAIT)
    assert (list(got), message) == ([channel], {"type": "fresh"})
    assert await _nothing_arrives(owner.receive_local())


async def test_messages_that_expired_in_redis_before_the_owner_read_them_are_counted(
    make_redis_layer: Any,
) -> None:
    owner = await make_redis_layer(expiry=0.3)
    other = await make_redis_layer(expiry=0.3)
    channel = await owner.new_channel()
    await other.group_add("late", channel)  # another process's membership: a copy in Redis
    # The owner is not reading yet: the messages wait in its inbox in Redis, and expire.
    await other.send(channel, {"type": "a"})
    await other.group_send("late", {"type": "b"})
    await asyncio.sleep(0.5)
    reading = asyncio.ensure_future(owner.receive_local())
    async with asyncio.timeout(WAIT):  # its reader finds both expired: counted, not handed on
        while owner.local_inbox.expired < 2:
            await asyncio.sleep(0.02)
    assert owner.local_inbox.expired == 2 and not reading.done()
    await other.send(channel, {"type": "fresh"})
    got, message = await asyncio.wait_for(reading, WAIT)
    assert (list(got), message) == ([channel], {"type": "fresh"})


async def test_messages_a_sender_found_expired_in_the_owners_inbox_are_counted(
    make_redis_layer: Any,
) -> None:
    """A send trims the expired entries at the head of the owner's inbox in Redis: the
    owner's heartbeat takes their count, once."""
    owner = await make_redis_layer(expiry=0.3, heartbeat=0.1)
    other = await make_redis_layer(expiry=0.3)
    channel = await owner.new_channel()
    await other.send(channel, {"type": "a"})
    await other.send(channel, {"type": "b"})
    await asyncio.sleep(0.5)
    await other.send(channel, {"type": "fresh"})  # removes a and b, counting them
    got, message = await asyncio.wait_for(owner.receive_local(), WAIT)
    assert (list(got), message) == ([channel], {"type": "fresh"})
    async with asyncio.timeout(WAIT):
        while owner.local_inbox.expired < 2:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # more heartbeats: counted once
    assert owner.local_inbox.expired == 2


async def test_membership_added_by_another_process_is_delivered_once(
    make_redis_layer: Any,
) -> None:
    owner = await make_redis_layer()
    other = await make_redis_layer()
    channel = await owner.new_channel()
    await other.group_add("mixed", channel)  # recorded in Redis
    await other.group_send("mixed", {"type": "via.redis"})
    assert (await asyncio.wait_for(owner.receive(channel), WAIT))["type"] == "via.redis"
    await owner.group_add("mixed", channel)  # now held by its owner: one copy only
    await other.group_send("mixed", {"type": "once"})
    assert (await asyncio.wait_for(owner.receive(channel), WAIT))["type"] == "once"
    assert await _nothing_arrives(owner.receive(channel))
    # A discard from another process reaches the owner's own membership too.
    await other.group_discard("mixed", channel)
    await asyncio.sleep(0.1)
    await other.group_send("mixed", {"type": "gone"})
    assert await _nothing_arrives(owner.receive(channel))


async def test_flush_clears_memberships_in_every_process(make_redis_layer: Any) -> None:
    owner = await make_redis_layer()
    other = await make_redis_layer()
    channel = await owner.new_channel()
    await owner.group_add("flushed", channel)
    await other.flush()
    await asyncio.sleep(0.1)
    await other.group_send("flushed", {"type": "after.flush"})
    assert await _nothing_arrives(owner.receive(channel))


async def test_group_send_from_another_layer_drops_full_local_members(
    make_redis_layer: Any,
) -> None:
    owner = await make_redis_layer(capacity=1)
    other = await make_redis_layer(capacity=1)
    full, free = await owner.new_channel(), await owner.new_channel()
    await owner.group_add("g", full)
    await owner.group_add("g", free)
    await owner.send(full, {"type": "fill"})
    await other.group_send("g", {"type": "news"})

    # The message crosses pub/sub; wait until the owner has handled it while `full` is
    # still full (receiving "fill" first would free the room and make the drop a race).
    async def dropped() -> None:
        while owner.drops["g"] < 1:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(dropped(), WAIT)
    assert await asyncio.wait_for(owner.receive_local(), WAIT) == ((full,), {"type": "fill"})
    assert await asyncio.wait_for(owner.receive_local(), WAIT) == ((free,), {"type": "news"})
    assert owner.drops["g"] == 1


@pytest.mark.parametrize("kind", ["group", "direct"])
async def test_a_trailing_marker_never_overtakes_a_slow_send(
    make_redis_layer: Any, kind: str
) -> None:
    """A send held up on its way to Redis past the marker's delay (and the receiver's
    grace) still arrives and is not counted as lost: its marker waits for it."""
    receiver = await make_redis_layer(timeout=0.5)  # grace: 0.5 s
    sender = await make_redis_layer()
    channel = await receiver.new_channel()
    await receiver.group_add("slow", channel)

    async def send(n: int) -> None:
        if kind == "group":
            await sender.group_send("slow", {"type": "m", "n": n})
        else:
            await sender.send(channel, {"type": "m", "n": n})

    await send(1)
    assert (await asyncio.wait_for(receiver.receive(channel), WAIT))["n"] == 1
    # The next send waits before its script reaches Redis, as over a slow connection.
    name = "_group_send_script" if kind == "group" else "_send_script"
    script = getattr(sender, name)
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(**kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await script(**kwargs)

    setattr(sender, name, held)
    sending = asyncio.ensure_future(send(2))
    await asyncio.wait_for(entered.wait(), WAIT)
    # Past the marker's delay and the receiver's grace: a marker sent now would have
    # been counted against the message still on its way.
    async with asyncio.timeout(WAIT):
        deadline = time.monotonic() + DELAY + 0.5 + 0.4
        while time.monotonic() < deadline and not receiver.lost:
            await asyncio.sleep(0.02)
    release.set()
    await asyncio.wait_for(sending, WAIT)
    assert (await asyncio.wait_for(receiver.receive(channel), WAIT))["n"] == 2
    assert not receiver.lost


# -- encryption ---------------------------------------------------------------------------


async def test_encrypted_payloads_and_key_rotation(
    make_redis_layer: Any, redis_server: Any, prefix: str, caplog: Any
) -> None:
    old = await make_redis_layer(symmetric_encryption_keys=["old-key"])
    rotated = await make_redis_layer(symmetric_encryption_keys=["new-key", "old-key"])
    stranger = await make_redis_layer(symmetric_encryption_keys=["other"])
    await old.send("sealed", {"type": "secret", "bytes": b"\x00\x01"})
    client = Redis.from_url(redis_server.url)
    try:
        raw = await client.lindex(f"{prefix}c:{{sealed}}", 0)
    finally:
        await client.aclose()
    assert b"secret" not in raw
    assert await asyncio.wait_for(rotated.receive("sealed"), WAIT) == {
        "type": "secret",
        "bytes": b"\x00\x01",
    }
    await rotated.send("sealed", {"type": "from.new"})
    with caplog.at_level(logging.ERROR, logger="chanlite.layers.redis"):
        assert await _nothing_arrives(stranger.receive("sealed"))
    assert "not sealed with any configured key" in caplog.text


# -- event loops ----------------------------------------------------------------------------


async def test_driven_from_a_private_event_loop_thread(make_redis_layer: Any) -> None:
    receiver = await make_redis_layer()
    channel = await receiver.new_channel()
    await receiver.group_add("news", channel)
    sender: RedisLayer = await make_redis_layer()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        for i in range(3):
            future = asyncio.run_coroutine_threadsafe(
                sender.group_send("news", {"type": "n", "i": i}), loop
            )
            await asyncio.wrap_future(future)
        got = [(await asyncio.wait_for(receiver.receive(channel), WAIT))["i"] for _ in range(3)]
        assert got == [0, 1, 2]
        asyncio.run_coroutine_threadsafe(sender.close(), loop).result(WAIT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


def test_async_to_sync_calls_from_plain_sync_code(redis_server: Any, prefix: str) -> None:
    # Each async_to_sync call runs on a fresh event loop that is closed afterwards.
    layer = RedisLayer(redis_server.url, prefix=prefix)
    for i in range(3):
        async_to_sync(layer.send)("sync-jobs", {"type": "job", "i": i})
    got = [async_to_sync(layer.receive)("sync-jobs")["i"] for _ in range(3)]
    assert got == [0, 1, 2]
    async_to_sync(layer.close)()


async def test_receiving_side_refuses_a_second_live_loop(make_redis_layer: Any) -> None:
    layer = await make_redis_layer()
    await layer.send("mine", {"type": "x"})  # this loop owns the layer now

    def other_loop() -> None:
        async def receive() -> None:
            await layer.receive("mine")

        with pytest.raises(RuntimeError, match="event loop that first used"):
            asyncio.run(receive())

    await asyncio.get_running_loop().run_in_executor(None, other_loop)


async def test_malformed_entries_are_logged_and_skipped(
    make_redis_layer: Any, redis_server: Any, prefix: str, caplog: Any
) -> None:
    layer = await make_redis_layer()
    client = Redis.from_url(redis_server.url)
    try:
        await client.rpush(f"{prefix}c:{{dirty}}", b"9999999999999not msgpack \xc1")
    finally:
        await client.aclose()
    await layer.send("dirty", {"type": "clean"})
    with caplog.at_level(logging.ERROR, logger="chanlite.layers.redis"):
        assert (await asyncio.wait_for(layer.receive("dirty"), WAIT))["type"] == "clean"
    assert "malformed" in caplog.text


async def test_reading_frees_capacity_for_remote_senders(make_redis_layer: Any) -> None:
    owner = await make_redis_layer(capacity=2)
    other = await make_redis_layer(capacity=2)
    channel = await owner.new_channel()
    for i in range(2):
        await other.send(channel, {"type": "fill", "i": i})
    with pytest.raises(ChannelFull):
        await other.send(channel, {"type": "over"})
    for i in range(2):
        _, message = await asyncio.wait_for(owner.receive_local(), WAIT)
        assert message["i"] == i
    # The owner brings the count down just after delivering, off the delivery path.
    for _ in range(100):
        try:
            await other.send(channel, {"type": "room.again"})
            break
        except ChannelFull:
            await asyncio.sleep(0.02)
    else:
        raise AssertionError("capacity was never freed")
    assert (await asyncio.wait_for(owner.receive_local(), WAIT))[1]["type"] == "room.again"


async def test_group_add_without_a_server_fails_clearly(make_redis_layer: Any) -> None:
    layer = RedisLayer("redis://127.0.0.1:1/0", timeout=3)
    try:
        mine = await layer.new_channel()
        with pytest.raises(RedisUnavailable):
            await asyncio.wait_for(layer.group_add("room", mine), WAIT)
        # Not left half-joined: a later group_send (elsewhere) would not count on it.
        assert "room" not in layer._groups
    finally:
        await layer.close()


async def test_local_capacity_holds_across_a_backlog(make_redis_layer: Any) -> None:
    # Counting per member starts only once the queue could hold a full channel.
    layer = await make_redis_layer(capacity=5)
    other = await make_redis_layer(capacity=5)
    members = [await layer.new_channel() for _ in range(50)]
    for channel in members:
        await layer.group_add("crowd", channel)
    for i in range(8):
        await layer.group_send("crowd", {"type": "n", "i": i})
    assert layer.drops["crowd"] == 3 * 50
    got = [await asyncio.wait_for(layer.receive_local(), WAIT) for _ in range(5)]
    assert [message["i"] for _, message in got] == [0, 1, 2, 3, 4]
    assert all(len(channels) == 50 for channels, _ in got)
    # Drained: every member has room again, for messages from other processes too.
    await other.group_send("crowd", {"type": "n", "i": 8})
    channels, message = await asyncio.wait_for(layer.receive_local(), WAIT)
    assert (len(channels), message["i"]) == (50, 8)
    assert await _nothing_arrives(layer.receive_local())


async def test_garbage_in_an_inbox_is_logged_and_skipped(
    make_redis_layer: Any, redis_server: Any, prefix: str, caplog: Any
) -> None:
    layer = await make_redis_layer()
    other = await make_redis_layer()
    mine = await layer.new_channel()
    client = Redis.from_url(redis_server.url)
    try:
        inbox = f"{prefix}i:{{{layer.client_id}}}"
        await client.rpush(inbox, b"garbage", b"9999999999999" + mine.encode() + b" \xc1")
    finally:
        await client.aclose()
    with caplog.at_level(logging.ERROR, logger="chanlite.layers.redis"):
        await other.send(mine, {"type": "fine"})
        got, message = await asyncio.wait_for(layer.receive_local(), WAIT)
    assert (list(got), message) == ([mine], {"type": "fine"})
    assert "malformed" in caplog.text


async def test_sync_senders_from_threads(
    make_redis_layer: Any, redis_server: Any, prefix: str
) -> None:
    from chanlite.sync import SyncSender
    from chanlite.sync import close as sync_close

    layer = await make_redis_layer()
    mine = await layer.new_channel()
    await layer.group_add("from-threads", mine)
    sender = SyncSender(f"{redis_server.url}?prefix={prefix}")

    def work(i: int) -> None:
        sender.group_send("from-threads", {"type": "n", "i": i})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
    try:
        got = sorted([(await asyncio.wait_for(layer.receive(mine), WAIT))["i"] for _ in range(4)])
        assert got == [0, 1, 2, 3]
    finally:
        await asyncio.get_running_loop().run_in_executor(None, sync_close)


async def test_wrong_password_is_reported_as_such(unstarted_redis: Any) -> None:
    server = unstarted_redis
    server.start("--requirepass", "pw-123")
    layer = RedisLayer(f"redis://:wrong@127.0.0.1:{server.port}/0", timeout=1)
    try:
        for call in (
            lambda: layer.send("guarded", {"type": "no"}),
            lambda: layer.group_send("guarded", {"type": "no"}),
            lambda: layer.receive("guarded"),  # pub/sub: the wake topic
        ):
            with pytest.raises(RedisAuthError, match="refused the password") as caught:
                await asyncio.wait_for(call(), WAIT)
            assert "unreachable" not in str(caught.value)
            assert "wrong" not in str(caught.value).split("***")[0]  # the password is hidden
    finally:
        await layer.close()


async def test_missing_password_says_one_is_required(unstarted_redis: Any) -> None:
    server = unstarted_redis
    server.start("--requirepass", "pw-123")
    layer = RedisLayer(f"redis://127.0.0.1:{server.port}/0", timeout=1)
    try:
        mine = await layer.new_channel()
        for call in (
            lambda: layer.send("guarded", {"type": "no"}),
            lambda: layer.group_send("guarded", {"type": "no"}),  # a large script call
            lambda: layer.group_add("guarded", mine),
        ):
            with pytest.raises(RedisAuthError, match="requires a password") as caught:
                await asyncio.wait_for(call(), WAIT)
            assert "multibulk" not in str(caught.value)
    finally:
        await layer.close()
