"""The layer on a Sentinel-managed master: the URL forms, and the shared contract suites
on a real group (a master, a replica, three sentinels)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from chanlite_redis import RedisLayer, RedisUnavailable
from chanlite_redis.config import SentinelTarget

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
