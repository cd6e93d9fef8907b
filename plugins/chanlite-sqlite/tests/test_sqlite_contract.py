from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chanlite_sqlite import SQLiteLayer

from chanlite.layers import BaseLayer
from chanlite.testing import (
    CrossProcessStreamsContract,
    HistoryContract,
    LayerContract,
    PresenceContract,
)


@pytest.fixture
async def make_layer(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[BaseLayer] = []

    async def make(**options: Any) -> BaseLayer:
        layer = SQLiteLayer(tmp_path / "layer.db", **options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


class TestSQLiteContract(LayerContract):
    pass


class TestSQLiteStreams(HistoryContract, PresenceContract):
    pass


class TestSQLiteStreamsAcrossProcesses(CrossProcessStreamsContract):
    """History and presence shared by real OS processes through one file."""

    @pytest.fixture
    def layer_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'shared.db'}"
