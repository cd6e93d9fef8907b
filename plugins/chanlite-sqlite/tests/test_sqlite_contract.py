from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chanlite_sqlite import SQLiteLayer

from chanlite.layers import BaseLayer
from chanlite.testing import LayerContract


class TestSQLiteContract(LayerContract):
    @pytest.fixture
    async def make_layer(self, tmp_path: Path) -> AsyncIterator[Any]:
        made: list[BaseLayer] = []

        async def make(**options: Any) -> BaseLayer:
            layer = SQLiteLayer(tmp_path / "layer.db", **options)
            made.append(layer)
            return layer

        yield make
        for layer in made:
            await layer.close()
