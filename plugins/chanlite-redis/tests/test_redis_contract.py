"""The shared layer contract, run against a real Redis server."""

from __future__ import annotations

from typing import Any

import pytest

from chanlite.testing import LayerContract


class TestRedisContract(LayerContract):
    @pytest.fixture
    def make_layer(self, make_redis_layer: Any) -> Any:
        return make_redis_layer
