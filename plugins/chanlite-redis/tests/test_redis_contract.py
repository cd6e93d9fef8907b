"""The shared layer contract, with loop changes and cancellation, against a real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from chanlite.testing import LayerContract
from chanlite.testing.contract import LoopSafetyContract


class TestRedisContract(LayerContract, LoopSafetyContract):
    @pytest.fixture
    def make_layer(self, make_redis_layer: Any) -> Any:
        return make_redis_layer
