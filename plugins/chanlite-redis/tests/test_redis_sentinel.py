"""The layer on a Sentinel-managed master: the URL forms, the shared contract suites on a
real group (a master, a replica, three sentinels), and a group whose servers and sentinels
each require their own password."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from chanlite_redis import RedisAuthError, RedisLayer, RedisUnavailable
from chanlite_redis.config import SentinelTarget
from redis.exceptions import AuthenticationError
from redis_nodes import SentinelGroup, _ask

from chanlite.layers import LayerConfigError, get_layer
from chanlite.testing import HistoryContract, LayerContract, PresenceContract


def _target(layer: RedisLayer) -> SentinelTarget:
    target = layer._target
    assert isinstance(target, SentinelTarget)
    return target


def test_the_url_names_the_sentinels_the_service_and_the_db() -> None:
    layer = get_layer(
        "redis+sentinel://:s%40cret@h1:26380,h2,[::1]:26381/mymaster/2"
        "?sentinel_password=sp&capacity=7"
    )
    assert isinstance(layer, RedisLayer)
    target = _target(layer)
    assert target.sentinels == [("h1", 26380), ("h2", 26379), ("::1", 26381)]
    assert target.service == "mymaster"
    assert target.connection["db"] == 2
    assert target.connection["password"] == "s@cret"  # the servers' password
    assert target.sentinel_kwargs["password"] == "sp"  # the sentinels' own
    assert layer.capacity == 7
    assert "s@cret" not in repr(layer) and "s%40cret" not in repr(layer)


def test_the_db_may_be_an_option_and_tls_reaches_the_sentinels_too() -> None:
    layer = get_layer("rediss+sentinel://u:p@h1:1/svc?db=3&ssl_cert_reqs=none")
    assert isinstance(layer, RedisLayer)
    target = _target(layer)
    assert target.connection["db"] == 3
    assert target.connection["username"] == "u"
    assert target.connection["ssl"] is True
    assert target.sentinel_kwargs["ssl"] is True
    assert target.sentinel_kwargs["ssl_cert_reqs"] == "none"


def test_channels_redis_style_sentinel_hosts() -> None:
    layer = RedisLayer(
        hosts=[
            {
                "sentinels": [("10.0.0.1", 26379), ("10.0.0.2", 26379)],
                "master_name": "mymaster",
                "sentinel_kwargs": {"password": "sp"},
                "password": "mp",
                "db": 1,
            }
        ]
    )
    target = _target(layer)
    assert target.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert target.service == "mymaster"
    assert target.connection["password"] == "mp"
    assert target.connection["db"] == 1
    assert target.sentinel_kwargs == {"password": "sp"}


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+sentinel://h1:26379", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://h1:26379/a/1/2", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel:///mymaster", "No sentinel address"),
        ("redis+sentinel://h1:port/mymaster", "Bad port"),
        ("redis+sentinel://h1/mymaster/x", "Bad db"),
        ("redis+sentinel://h1/mymaster/1?db=2", "gives the db twice"),
        ("redis://h1:6379/0?sentinel_password=x", "only apply to redis\\+sentinel"),
    ],
)
def test_a_malformed_sentinel_url_is_a_precise_error(url: str, error: str) -> None:
    with pytest.raises(LayerConfigError, match=error):
        get_layer(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@h1:6379/0?capacity=x", "redis://:***@h1:6379/0?capacity=x"),
        ("redis://u:s3cret@h1/0?bogus=1", "redis://u:***@h1/0?bogus=1"),
        (
            "redis+sentinel://:s3cret@h1/m?sentinel_password=s3cret&timeout=x",
            "redis+sentinel://:***@h1/m?sentinel_password=***&timeout=x",
        ),
        ("redis+cluster://:s3cret@n1:7000?heartbeat=x", "redis+cluster://:***@n1:7000?heartbeat=x"),
    ],
)
def test_an_option_error_masks_the_passwords(url: str, shown: str) -> None:
    with pytest.raises(LayerConfigError) as error:
        get_layer(url)
    assert "s3cret" not in str(error.value)
    assert repr(shown) in str(error.value)


async def test_no_sentinel_answering_is_reported_within_the_timeout() -> None:
    # Nothing listens on port 1: the layer says so, naming the group, not a traceback.
    layer = RedisLayer("redis+sentinel://127.0.0.1:1/mymaster", timeout=0.5)
    try:
        with pytest.raises(RedisUnavailable, match="mymaster"):
            await layer.group_send("g", {"type": "x"})
    finally:
        await layer.close()


@pytest.fixture
async def make_sentinel_layer(sentinel_group: Any, prefix: str) -> AsyncIterator[Any]:
    """Factory of layers on the session's Sentinel group, closed afterwards."""
    made: list[RedisLayer] = []

    async def make(**options: Any) -> RedisLayer:
        options.setdefault("prefix", prefix)
        layer = RedisLayer(sentinel_group.url, **options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


class TestSentinelContract(LayerContract):
    @pytest.fixture
    def make_layer(self, make_sentinel_layer: Any) -> Any:
        return make_sentinel_layer


class TestSentinelStreams(HistoryContract, PresenceContract):
    @pytest.fixture
    def make_layer(self, make_sentinel_layer: Any) -> Any:
        return make_sentinel_layer


SERVER_PASSWORD, SENTINEL_PASSWORD = "server-s3cret", "sentinel-s3cret"


@pytest.fixture
def auth_sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Sentinel group whose servers require one password and sentinels another."""
    group = SentinelGroup(tmp_path, SERVER_PASSWORD, SENTINEL_PASSWORD)
    try:
        group.start()
        yield group
    finally:
        group.stop()


async def _until_sent(layer: RedisLayer, group: str, message: dict[str, Any]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await layer.group_send(group, message)
            return
        except RedisUnavailable:
            assert time.monotonic() < deadline, "the layer never reached the new master"
            await asyncio.sleep(0.1)


async def test_a_password_for_the_servers_and_another_for_the_sentinels(
    auth_sentinel_group: SentinelGroup, prefix: str
) -> None:
    group = auth_sentinel_group
    sentinel, server = group.sentinels[0].port, group.master.port
    # Each side asks for its own password and refuses the other's.
    for port, wrong in ((sentinel, SERVER_PASSWORD), (server, SENTINEL_PASSWORD)):
        with pytest.raises(AuthenticationError):
            _ask(port, "PING", password=wrong)
    with pytest.raises(AuthenticationError):  # NOAUTH
        _ask(server, "PING")

    options = f"&timeout=1&prefix={prefix}"
    sender, receiver = (get_layer(group.url + options) for _ in range(2))
    assert isinstance(sender, RedisLayer) and isinstance(receiver, RedisLayer)
    try:
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        await sender.group_send("room", {"type": "m", "n": 1})
        await sender.send(channel, {"type": "d", "n": 1})
        got = [(await asyncio.wait_for(receiver.receive_local(), 10))[1] for _ in range(2)]
        assert sorted(m["type"] for m in got) == ["d", "m"]
        # The layer follows the master across a failover with both passwords.
        group.wait_failover(group.kill_master())
        await _until_sent(sender, "room", {"type": "m", "n": 2})
        while (message := (await asyncio.wait_for(receiver.receive_local(), 30))[1])["n"] != 2:
            pass  # a message sent again by _until_sent would come first
        assert message == {"type": "m", "n": 2}
        await sender.send(channel, {"type": "d", "n": 2})
        assert (await asyncio.wait_for(receiver.receive_local(), 10))[1]["type"] == "d"
    finally:
        await sender.close()
        await receiver.close()

    plain = group.url.split("?")[0]
    for url, problem in (
        (group.url.replace(SENTINEL_PASSWORD, "wrong"), "sentinels that refused"),
        (plain + "?timeout=1", "sentinels that require a password"),
        (group.url.replace(SERVER_PASSWORD, "wrong"), "refused the password"),
        (group.url.replace(f":{SERVER_PASSWORD}@", ""), "requires a password"),
    ):
        layer = get_layer(url + ("&timeout=1" if "?" in url else ""))
        try:
            with pytest.raises(RedisAuthError, match=problem) as refused:
                await layer.group_send("room", {"type": "m"})
            assert "s3cret" not in str(refused.value)
        finally:
            await layer.close()
