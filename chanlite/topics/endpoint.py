"""The socket endpoint: ``app.socket("/socket")`` serves ``/socket/websocket`` (and
``/socket/longpoll``) on the Phoenix Channels protocol, vsn 2.0.0.

::

    socket = app.socket("/socket", connect=authenticate)
    room = socket.topic("room:{name}")

``connect(connection, params)`` sees the socket's params (the query string: a token,
``vsn``...) and must return True to accept the connection; it may fill
``connection.assigns``. A refused WebSocket handshake is answered 403, a refused long-poll
``{"status": 403}``, as Phoenix answers them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chanlite.asgi_websocket import peer
from chanlite.endpoints import WebSocketHandler, as_async
from chanlite.exceptions import WebSocketDisconnect, WebSocketStateError
from chanlite.layers.streams import PRESENCE_DIFF, HistoryPolicy
from chanlite.routing import BaseRoute, HTTPRoute, WebSocketRoute
from chanlite.topics.connection import Connection
from chanlite.topics.longpoll import LongPoll
from chanlite.topics.protocol import Limits
from chanlite.topics.streams import MESSAGE, topic_glob
from chanlite.topics.topic import Refused, Topic, broadcast

if TYPE_CHECKING:
    from chanlite.hub import Hub
    from chanlite.websocket import WebSocket

__all__ = ["TopicSocket"]

logger = logging.getLogger("chanlite.topics")

#: Sec-WebSocket-Protocol prefix of phoenix.js's ``authToken`` option.
AUTH_TOKEN_PREFIX = "base64url.bearer.phx."


class TopicSocket:
    """A Phoenix-protocol socket endpoint and its topics (build it with ``app.socket``)."""

    def __init__(
        self,
        path: str,
        hub: Hub,
        *,
        connect: Callable[..., Any] | None = None,
        limits: Limits | None = None,
        longpoll: bool = True,
        longpoll_window: float = 10.0,
    ) -> None:
        self.path = path.rstrip("/")
        self.hub = hub
        self.connect_handler = as_async(connect) if connect is not None else None
        self.limits = limits or Limits()
        self.topics: list[Topic] = []
        self.longpoll = longpoll
        self.longpoll_window = longpoll_window
        self.websocket_handler = WebSocketHandler(self._serve_websocket, self.path + "/websocket")
        # History messages and presence diffs come as layer events, in order, per socket.
        self.websocket_handler.add_event_handler(MESSAGE, _on_message)
        self.websocket_handler.add_event_handler(PRESENCE_DIFF, _on_presence_diff)

    def __repr__(self) -> str:
        return f"TopicSocket({self.path!r})"

    def topic(self, pattern: str, *, history: int | None = None, presence: bool = False) -> Topic:
        """Declare the topics matching *pattern* (``"room:{name}"``); tried in order.

        *history* keeps that many messages per topic in the layer, so a client rejoins
        from its last position and misses nothing; *presence* lets channels ``track``
        themselves (:mod:`chanlite.topics.streams` says how both look on the wire).
        Both need a layer with the capability (memory, SQLite, Redis).
        """
        if history is not None:
            self.hub.keep_history(topic_glob(pattern), HistoryPolicy(history))
        topic = Topic(pattern, self.hub, history=history, presence=presence)
        self.topics.append(topic)
        return topic

    def match(self, topic: str) -> tuple[Topic, tuple[Any, ...]] | None:
        """The first declared :class:`Topic` that *topic* fits, and its parameters."""
        for definition in self.topics:
            args = definition.match(topic)
            if args is not None:
                return definition, args
        return None

    async def broadcast(self, topic: str, event: str, payload: Any) -> None:
        """Send *event* to every subscriber of *topic* (a full topic string), everywhere."""
        found = self.match(topic)
        if found is not None:
            await found[0].send(topic, event, payload)
        else:
            await broadcast(self.hub, topic, event, payload)

    def routes(self) -> list[BaseRoute]:
        """The routes this endpoint serves (the app adds them)."""
        routes: list[BaseRoute] = [
            WebSocketRoute(self.path + "/websocket", self.websocket_handler, name="phoenix")
        ]
        if self.longpoll:
            poll = LongPoll(self)
            routes.append(
                HTTPRoute(
                    self.path + "/longpoll",
                    poll.handle,
                    methods=["GET", "POST", "OPTIONS"],
                    name="phoenix-longpoll",
                )
            )
        return routes

    # -- connecting -----------------------------------------------------------------------

    async def authorize(self, connection: Connection) -> bool:
        """Check the protocol version, then run ``connect``: True when accepted."""
        vsn = connection.params.get("vsn", "1.0.0")
        if not vsn.startswith("2."):
            logger.warning(
                "Refused a Phoenix socket from %s: serializer vsn %r (only 2.x is spoken)",
                connection.transport.peer,
                vsn,
            )
            return False
        if self.connect_handler is None:
            return True
        try:
            accepted = await self.connect_handler(connection, connection.params)
        except Refused:
            accepted = False
        except Exception:
            logger.exception("connect handler of %r failed", self)
            return False
        if not accepted:
            logger.info("connect refused the socket from %s", connection.transport.peer)
        return bool(accepted)

    async def _serve_websocket(self, ws: WebSocket) -> None:
        connection = Connection(self, _WebSocketTransport(ws), dict(ws.query_params))
        subprotocol = _auth_token(ws, connection)
        if not await self.authorize(connection):
            await ws.close(1008)  # before accept: the handshake is refused with 403
            return
        await ws.accept(subprotocol=subprotocol)
        ws.state.topics = connection
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                if not await connection.receive(data):
                    break
        finally:
            await connection.terminate()


async def _on_message(ws: WebSocket, event: dict[str, Any]) -> None:
    connection = ws.state.__dict__.get("topics")
    if isinstance(connection, Connection):
        await connection.on_message(event)


async def _on_presence_diff(ws: WebSocket, event: dict[str, Any]) -> None:
    connection = ws.state.__dict__.get("topics")
    if isinstance(connection, Connection):
        await connection.on_presence_diff(event)


def _auth_token(ws: WebSocket, connection: Connection) -> str | None:
    """phoenix.js's ``authToken`` rides in Sec-WebSocket-Protocol beside "phoenix"."""
    offered = [
        p.strip()
        for value in ws.headers.getlist("sec-websocket-protocol")
        for p in value.split(",")
    ]
    for protocol in offered:
        if protocol.startswith(AUTH_TOKEN_PREFIX):
            encoded = protocol[len(AUTH_TOKEN_PREFIX) :]
            try:
                token = base64.b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                logger.info("Undecodable auth token from %s ignored", connection.transport.peer)
            else:
                connection.assigns.setdefault("auth_token", token)
    return "phoenix" if "phoenix" in offered else None


class _WebSocketTransport:
    __slots__ = ("ws",)

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    @property
    def channel_name(self) -> str:
        return self.ws.channel_name

    @property
    def peer(self) -> str:
        return peer(self.ws.scope)

    async def send(self, messages: list[str | bytes]) -> None:
        ws = self.ws
        try:
            for message in messages:
                if isinstance(message, str):
                    await ws.send_text(message)
                else:
                    await ws.send_bytes(message)
        except (WebSocketDisconnect, WebSocketStateError):
            logger.debug("%d message(s) to %s not sent: it is gone", len(messages), self.peer)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, WebSocketStateError):
            await self.ws.close(code, reason)
