"""Testing tools: an in-process client for apps and the layer contract suite.

``TestClient`` needs nothing beyond chanlite; ``LayerContract`` imports pytest, so it is
loaded only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chanlite.testing.client import TestClient, WebSocketTestSession
    from chanlite.testing.contract import LayerContract

__all__ = ["LayerContract", "TestClient", "WebSocketTestSession"]


def __getattr__(name: str) -> Any:
    if name == "LayerContract":
        from chanlite.testing.contract import LayerContract

        return LayerContract
    if name in ("TestClient", "WebSocketTestSession"):
        from chanlite.testing import client

        return getattr(client, name)
    raise AttributeError(f"module 'chanlite.testing' has no attribute {name!r}")
