"""What every connection of one server shares, and the scope keys HTTP and WebSocket share.

:class:`ServerState` holds the config, the app, the counters, the cached ``Date`` and the
list of WebSockets with broadcast frames waiting for this loop iteration's flush.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from chanlite.exceptions import ClientDisconnected
from chanlite.server.counters import ServerCounters
from chanlite.server.http import RequestHead
from chanlite.types import ASGIApp, Scope

if TYPE_CHECKING:
    from chanlite.server.config import Config

logger = logging.getLogger("chanlite.server")
access_logger = logging.getLogger("chanlite.access")
# One dict for every scope instead of one per connection (apps only read it).
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

__all__ = ["ClientDisconnected", "ServerState", "base_scope"]


class ServerState:
    """What every connection of one server shares: config, app, counters, the Date."""

    __slots__ = (
        "access_log",
        "active",
        "app",
        "app_state",
        "config",
        "connections",
        "counters",
        "date",
        "default_headers",
        "dirty",
        "flush_deferred",
        "flush_scheduled",
        "lingering",
        "send_limit",
        "slow_consumers",
        "tasks",
        "trim_requested",
    )

    def __init__(self, config: Config, app: ASGIApp) -> None:
        self.config = config
        self.app = app
        self.connections: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.active = 0  # requests being served plus open WebSockets
        self.app_state: dict[str, Any] = {}
        self.date: bytes | None = None
        self.default_headers = b""
        self.access_log = config.access_log
        self.send_limit = config.ws_send_limit
        self.slow_consumers = 0  # WebSockets closed by the slow-consumer policy
        self.counters = ServerCounters()  # offered to the app in the lifespan scope
        # Connections the server closed that still hold unsent bytes (and a descriptor)
        # until the client reads them or the grace ends, and WebSockets whose app is done
        # while the socket waits for the close handshake or its abort: they count against
        # the limit until the transport is gone.
        self.lingering = 0
        # WebSockets with broadcast frames queued this loop iteration; one call_soon
        # callback writes each one's queue with a single transport.write.
        self.dirty: list[Any] = []
        # When a connection that held large buffers was gone (loop time; 0.0: none since
        # the last trim): the tick then gives freed memory back to the OS (server.memory).
        self.trim_requested = 0.0
        self.flush_scheduled = False
        self.flush_deferred = False

    def flush_dirty(self) -> None:
        """Write every queued broadcast frame: one write per connection per iteration.

        The first call only re-queues itself: the flush then runs after the callbacks
        already waiting (a publisher's next messages, woken by the same poll), so their
        frames join the same write. Under a steady stream of broadcasts this doubled the
        frames per ``send()`` and raised deliveries per CPU-second by half (bench/README).
        """
        if not self.flush_deferred:
            self.flush_deferred = True
            asyncio.get_running_loop().call_soon(self.flush_dirty)
            return
        self.flush_deferred = False
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            try:
                conn.flush_pending()
            except Exception:  # one broken transport must not hold back everyone's frames
                logger.exception("Writing queued broadcast frames failed")

    def request_trim(self, now: float) -> None:
        """A connection that held large buffers is gone: return freed memory soon."""
        if not self.trim_requested:
            self.trim_requested = now

    def over_limit(self) -> bool:
        limit = self.config.limit_concurrency
        return limit is not None and self.active + self.lingering >= limit


def client_address(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple | list) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return None


def server_address(transport: asyncio.BaseTransport) -> tuple[str, int | None] | None:
    return _address(transport.get_extra_info("sockname"))


def listener_address(sock: socket.socket) -> tuple[str, int | None] | None:
    """The server address every connection accepted on *sock* shares, or None when it
    varies (a wildcard bind: each connection has the local address it arrived on). Known
    up front, every connection shares one tuple instead of converting the transport's
    address for itself."""
    name = sock.getsockname()
    if isinstance(name, tuple | list) and str(name[0]) in ("0.0.0.0", "::", ""):
        return None
    return _address(name)


def _address(sock: Any) -> tuple[str, int | None] | None:
    if isinstance(sock, tuple | list) and len(sock) >= 2:
        return (str(sock[0]), int(sock[1]))
    if isinstance(sock, str) and sock:
        return (sock, None)
    return None


def base_scope(
    state: ServerState,
    kind: str,
    head: RequestHead,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    secure: bool,
) -> Scope:
    """The scope keys HTTP and WebSocket share, with trusted proxy headers applied."""
    config = state.config
    scheme = ("https" if secure else "http") if kind == "http" else ("wss" if secure else "ws")
    if config.proxy_headers and client is not None and client[0] in config.trusted_hosts:
        for name, value in head.headers:
            if name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[-1].strip().lower()
                if proto in ("https", "wss"):
                    scheme = "https" if kind == "http" else "wss"
                elif proto in ("http", "ws"):
                    scheme = "http" if kind == "http" else "ws"
            elif name == b"x-forwarded-for":
                hosts = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
                # The right-most address not itself a trusted proxy is the client.
                for host in reversed(hosts):
                    if host not in config.trusted_hosts or host == hosts[0]:
                        client = (host, 0)
                        break
    root_path = config.root_path
    return {
        "type": kind,
        "asgi": ASGI_VERSION,
        "http_version": head.http_version,
        "scheme": scheme,
        "server": server,
        "client": client,
        "root_path": root_path,
        "path": root_path + head.path,
        "raw_path": head.raw_path,
        "query_string": head.query,
        "headers": head.headers,
        "state": state.app_state.copy(),
    }
