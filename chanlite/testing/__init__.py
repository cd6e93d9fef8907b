"""Testing tools: an in-process client for apps and the layer contract suite.

``TestClient`` (async) and ``SyncTestClient`` (the same, for plain ``def`` tests, as
Starlette's and FastAPI's) need nothing beyond chanlite; the contract suites (``LayerContract``,
``HistoryContract``, ``PresenceContract``, ``CrossProcessStreamsContract``) import pytest,
so they are loaded only when asked for. For a layer's tests across real OS processes:
:mod:`chanlite.testing.peer` (another process sharing the layer) and
:mod:`chanlite.testing.served` (``chanlite run`` on a free port).
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
    from chanlite.testing.sync_client import SyncTestClient, SyncWebSocketSession

__all__ = [
    "CrossProcessStreamsContract",
    "HistoryContract",
    "LayerContract",
    "PresenceContract",
    "SyncTestClient",
    "SyncWebSocketSession",
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
    if name in ("SyncTestClient", "SyncWebSocketSession"):
        from chanlite.testing import sync_client

        return getattr(sync_client, name)
    if name in ("TestClient", "WebSocketTestSession"):
        from chanlite.testing import client

        return getattr(client, name)
    raise AttributeError(f"module 'chanlite.testing' has no attribute {name!r}")
