"""Fixtures: a real ``redis-server`` on a free loopback port, started and stopped here."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from chanlite_redis import RedisLayer
from redis_nodes import RedisServer, SentinelGroup


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the session (tests keep apart by key prefix)."""
    with tempfile.TemporaryDirectory(prefix="chanlite-redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill and restart."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unstarted_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test to start with its own options (stopped afterwards)."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{secrets.token_hex(4)}:"


@pytest.fixture
async def make_redis_layer(redis_server: RedisServer, prefix: str) -> AsyncIterator[Any]:
    """Factory of layers on the shared server under this test's prefix, closed afterwards."""
    made: list[RedisLayer] = []

    async def make(**options: Any) -> RedisLayer:
        options.setdefault("prefix", prefix)
        layer = RedisLayer(redis_server.url, **options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    """A master, a replica and three sentinels shared by the session (never failed over)."""
    with tempfile.TemporaryDirectory(prefix="chanlite-sentinel-") as directory:
        group = SentinelGroup(Path(directory))
        try:
            group.start()
            yield group
        finally:
            group.stop()


@pytest.fixture
def own_sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Sentinel group of this test's own, whose master the test may kill."""
    group = SentinelGroup(tmp_path)
    try:
        group.start()
        yield group
    finally:
        group.stop()
