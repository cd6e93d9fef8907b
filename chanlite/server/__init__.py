"""chanlite's built-in HTTP/1.1 and WebSocket server for any ASGI 3 application.

``serve(app, host=..., port=...)`` blocks; ``await serve_async(app, ...)`` runs in a loop;
:class:`Server` with :class:`Config` is the embeddable form. See ``README.md`` here.
"""

from __future__ import annotations

from chanlite.server.config import Config
from chanlite.server.lifespan import LifespanError
from chanlite.server.main import Server, serve, serve_async
from chanlite.server.state import ClientDisconnected

__all__ = ["ClientDisconnected", "Config", "LifespanError", "Server", "serve", "serve_async"]
