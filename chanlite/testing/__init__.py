"""Testing tools: an in-process client for apps and the layer contract suite.

``TestClient`` needs nothing beyond chanlite; the contract suites (``LayerContract``,
``HistoryContract``, ``PresenceContract``, ``CrossProcessStreamsContract``) import pytest,
so they are loaded only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chanlite.testing.client import TestClient, WebSocketTestSession
    from chanlite.testing.contract import LayerContract
    from chanlite.testing.streams_contract import (
        CrossProcessStreamsContract,
        HistoryContract,
        PresenceContract,
    )

__all__ = [
    "CrossProcessStreamsContract",
    "HistoryContract",
    "LayerContract",
    "PresenceContract",
    "TestClient",
    "WebSocketTestSession",
]

_STREAMS = ("CrossProcessStreamsContract", "HistoryContract", "PresenceContract")


def __getattr__(name: str) -> Any:
    if name == "LayerContract":
        from chanlite.testing.contract import LayerContract

        return LayerContract
    if name in _STREAMS:
        from chanlite.testing import streams_contract

        return getattr(streams_contract, name)
    if name in ("TestClient", "WebSocketTestSession"):
        from chanlite.testing import client

        return getattr(client, name)
    raise AttributeError(f"module 'chanlite.testing' has no attribute {name!r}")
