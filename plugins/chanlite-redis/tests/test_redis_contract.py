"""The shared contract suites against a real Redis: the layer contract, loop changes and
cancellation, history and presence, and history and presence shared by real OS processes."""

from __future__ import annotations

from typing import Any

import pytest

from chanlite.testing import (
    CrossProcessStreamsContract,
    HistoryContract,
    LayerContract,
    PresenceContract,
)


class TestRedisContract(LayerContract):
    @pytest.fixture
    def make_layer(self, make_redis_layer: Any) -> Any:
        return make_redis_layer


class TestRedisStreams(HistoryContract, PresenceContract):
    @pytest.fixture
    def make_layer(self, make_redis_layer: Any) -> Any:
        return make_redis_layer


class TestRedisStreamsAcrossProcesses(CrossProcessStreamsContract):
    """History and presence shared by real OS processes through one redis-server."""

    @pytest.fixture
    def layer_url(self, redis_server: Any, prefix: str) -> str:
        # A prefix no other test uses is this test's fresh, empty Redis.
        return f"{redis_server.url}?prefix={prefix}"
