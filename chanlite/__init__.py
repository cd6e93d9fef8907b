"""chanlite: real-time Python made small.

WebSockets, HTTP, groups and events between connections on one tiny ASGI core, with
channel layers for one process (``memory://``), one machine (``sqlite:///``) or many
(``redis://``).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from chanlite.__about__ import __version__
from chanlite.app import App
from chanlite.exceptions import HTTPException, WebSocketDisconnect
from chanlite.layers import (
    BaseLayer,
    ChannelFull,
    HistoryError,
    HistoryGap,
    HistoryPage,
    NotSupported,
    PresenceError,
    StreamPosition,
    get_layer,
)
from chanlite.requests import Request
from chanlite.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from chanlite.sse import EventSourceResponse, ServerSentEvent
from chanlite.staticfiles import StaticFiles
from chanlite.websocket import WebSocket

__all__ = [
    "App",
    "BaseLayer",
    "ChannelFull",
    "EventSourceResponse",
    "FileResponse",
    "HTMLResponse",
    "HTTPException",
    "HistoryError",
    "HistoryGap",
    "HistoryPage",
    "JSONResponse",
    "NotSupported",
    "PlainTextResponse",
    "PresenceError",
    "RedirectResponse",
    "Request",
    "Response",
    "ServerSentEvent",
    "StaticFiles",
    "StreamPosition",
    "StreamingResponse",
    "WebSocket",
    "WebSocketDisconnect",
    "__version__",
    "async_to_sync",
    "get_layer",
    "serve",
    "serve_async",
    "sync_to_async",
]


def __getattr__(name: str) -> Any:
    # The server is imported on first use: apps mounted under another server never load it.
    if name in ("serve", "serve_async"):
        from chanlite import server

        return getattr(server, name)
    raise AttributeError(f"module 'chanlite' has no attribute {name!r}")
