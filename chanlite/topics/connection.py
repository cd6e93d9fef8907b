"""One client connection speaking the Phoenix protocol, whatever carries it.

A :class:`Connection` holds the Sans-I/O :class:`~chanlite.topics.protocol.SocketProtocol`,
the per-connection ``assigns``, and one :class:`Channel` per joined topic. Its transport
(a WebSocket, or a long-poll session) hands it each client message with
:meth:`Connection.receive` and writes out what it produces; the layer delivers topic
broadcasts to the transport directly (encoded once per process, never through here).

Joins run in the order they arrive, as Phoenix's socket process runs them; each joined
topic's events run one at a time, in order, on a task of their own, so a slow handler on
one topic holds up neither the others nor the heartbeat.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from chanlite.topics.protocol import (
    Closed,
    JoinRequest,
    Left,
    Limits,
    PushRequest,
    Refusal,
    SocketProtocol,
)
from chanlite.topics.topic import Refused, Reply, Topic, broadcast, topic_group

if TYPE_CHECKING:
    from chanlite.hub import Hub

__all__ = ["Channel", "Connection", "Transport"]

logger = logging.getLogger("chanlite.topics")


class Transport(Protocol):
    """What carries a connection's messages (a WebSocket, a long-poll session)."""

    @property
    def channel_name(self) -> str:
        """The layer channel topic groups are joined with."""

    @property
    def peer(self) -> str:
        """The client's address, for log lines."""

    async def send(self, messages: list[str | bytes]) -> None:
        """Write *messages* to the client, in order."""

    async def close(self, code: int, reason: str) -> None:
        """Close the whole connection with a WebSocket close *code*."""


class Channel:
    """One joined topic of one connection: what topic handlers get as their first argument.

    ``channel.assigns`` are the connection's (shared by its topics); ``push`` reaches this
    client, ``broadcast`` every subscriber, ``broadcast_from`` every subscriber but this
    one, ``close`` ends this topic for this client (``phx_close``).
    """

    __slots__ = ("_busy", "_queue", "args", "connection", "definition", "topic")

    def __init__(
        self, connection: Connection, topic: str, definition: Topic, args: tuple[Any, ...]
    ) -> None:
        self.connection = connection
        self.topic = topic
        self.definition = definition
        self.args = args
        self._queue: deque[PushRequest] | None = None
        self._busy = False

    def __repr__(self) -> str:
        return f"<Channel {self.topic!r} of {self.connection.transport.peer}>"

    @property
    def assigns(self) -> dict[str, Any]:
        """The connection's assigns (set by ``connect`` or any handler)."""
        return self.connection.assigns

    @property
    def joined(self) -> bool:
        """True while this channel is the topic's current one on its connection."""
        return self.connection.channels.get(self.topic) is self

    async def push(self, event: str, payload: Any) -> None:
        """Send *event* to this client on this topic (if it is still joined)."""
        if self.joined:
            self.connection.protocol.push(self.topic, event, payload)
            await self.connection.flush()

    async def broadcast(self, event: str, payload: Any) -> None:
        """Send *event* to every subscriber of this topic, in every process."""
        await broadcast(self.connection.hub, self.topic, event, payload)

    async def broadcast_from(self, event: str, payload: Any) -> None:
        """Send *event* to every subscriber of this topic but this client."""
        channel = self.connection.transport.channel_name
        await broadcast(self.connection.hub, self.topic, event, payload, exclude=channel)

    async def close(self) -> None:
        """End this topic for this client from the server (it gets ``phx_close``)."""
        if self.joined and self.connection.protocol.close(self.topic):
            await self.connection.flush()
            await self.connection.release(self, "closed")

    # -- the event queue ----------------------------------------------------------------------

    def enqueue(self, request: PushRequest) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(request)
        if not self._busy:
            self._busy = True
            self.connection.hub.spawn(self._run())

    async def _run(self) -> None:
        queue = self._queue
        try:
            while queue and self.joined:
                await self.connection.handle_push(self, queue.popleft())
        finally:
            self._busy = False
            if queue:
                queue.clear()


class Connection:
    """One client connection: its protocol state, assigns, params and joined channels."""

    __slots__ = ("assigns", "channels", "clock", "endpoint", "params", "protocol", "transport")

    def __init__(
        self,
        endpoint: Endpoint,
        transport: Transport,
        params: dict[str, str],
        *,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.transport = transport
        #: The socket's connect params (the query string, e.g. a token and ``vsn``).
        self.params = params
        #: Per-connection state, shared by its topics: set in ``connect`` or any handler.
        self.assigns: dict[str, Any] = {}
        self.protocol = SocketProtocol(limits or endpoint.limits)
        self.channels: dict[str, Channel] = {}
        self.clock = clock

    @property
    def hub(self) -> Hub:
        """The process's link to the layer."""
        return self.endpoint.hub

    async def flush(self) -> None:
        """Write what the protocol has produced."""
        messages = self.protocol.data_to_send()
        if messages:
            await self.transport.send(messages)

    async def receive(self, message: str | bytes) -> bool:
        """Act on one client message; False once the connection has been closed for it."""
        rejoined: str | None = None
        for event in self.protocol.receive(message, self.clock()):
            if isinstance(event, PushRequest):
                channel = self.channels.get(event.topic)
                if channel is not None:
                    channel.enqueue(event)
            elif isinstance(event, JoinRequest):
                await self.flush()  # a phx_close of the topic's previous join goes first
                await self._join(event, rejoin=event.topic == rejoined)
            elif isinstance(event, Left):
                left = self.channels.get(event.topic)
                await self.flush()
                if left is not None:
                    await self.release(left, event.reason)
                if event.reason == "rejoin":
                    rejoined = event.topic
            elif isinstance(event, Refusal):
                logger.debug("Refused from %s: %s", self.transport.peer, event.detail)
            elif isinstance(event, Closed):
                logger.info(
                    "Closing Phoenix socket from %s with %d: %s",
                    self.transport.peer,
                    event.code,
                    event.detail,
                )
                await self.flush()
                await self.transport.close(event.code, event.reason)
                return False
        await self.flush()
        return True

    async def _join(self, request: JoinRequest, rejoin: bool) -> None:
        if not await self._try_join(request) and rejoin:
            # The replaced join's group membership was kept for this one, which failed.
            await self._discard(request.topic)

    async def _try_join(self, request: JoinRequest) -> bool:
        found = self.endpoint.match(request.topic)
        if found is None:
            logger.warning(
                "Join of unmatched topic %r from %s refused", request.topic, self.transport.peer
            )
            self.protocol.refuse_join(request, {"reason": "unmatched topic"}, unmatched=True)
            return False
        definition, args = found
        channel = Channel(self, request.topic, definition, args)
        params = request.params if request.params is not None else {}
        group = topic_group(request.topic)
        try:
            response: Any = {}
            if definition.join_handler is not None:
                response = await definition.join_handler(channel, *args, params)
                if response is None:
                    response = {}
            # Subscribed before the reply, so nothing broadcast after it is missed.
            await self.hub.group_add(group, self.transport.channel_name)
        except Refused as refusal:
            logger.debug("Join of %r refused: %r", request.topic, refusal.response)
            self.protocol.refuse_join(request, refusal.response)
            return False
        except Exception:
            logger.exception("Join handler of %r failed for %r", definition, request.topic)
            self.protocol.refuse_join(request, {"reason": "join crashed"})
            return False
        self.channels[request.topic] = channel
        self.protocol.accept_join(request, response)
        return True

    async def handle_push(self, channel: Channel, request: PushRequest) -> None:
        """Run the handler of one event on *channel* and reply to it."""
        topic = channel.topic
        handler = channel.definition.events.get(request.event)
        if handler is None:
            logger.info(
                "No handler for %r on %r (from %s); refused",
                request.event,
                topic,
                self.transport.peer,
            )
            self.protocol.refuse(topic, request.ref, {"reason": "unhandled event"})
            await self.flush()
            return
        try:
            result = await handler(channel, *channel.args, request.payload)
        except Refused as refusal:
            self.protocol.refuse(topic, request.ref, refusal.response)
        except Exception:
            logger.exception("Handler of %r on %r failed", request.event, topic)
            if channel.joined and self.protocol.error(topic):
                await self.flush()
                await self.release(channel, "crashed")
            return
        else:
            if isinstance(result, Reply):
                self.protocol.reply(topic, request.ref, result.status, result.response or {})
            elif result is not None:
                self.protocol.reply(topic, request.ref, "ok", result)
        await self.flush()

    async def release(self, channel: Channel, reason: str) -> None:
        """Forget *channel* (left, replaced, closed, crashed, disconnected)."""
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
        if reason != "rejoin":  # a rejoin keeps the group: the new join is subscribed
            await self._discard(channel.topic)
        handler = channel.definition.leave_handler
        if handler is not None:
            try:
                await handler(channel, *channel.args)
            except Exception:
                logger.exception("Leave handler of %r failed", channel.topic)

    async def _discard(self, topic: str) -> None:
        try:
            await self.hub.group_discard(topic_group(topic), self.transport.channel_name)
        except Exception:
            logger.warning("Could not leave the group of %r", topic, exc_info=True)

    async def terminate(self) -> None:
        """The connection is over: release every channel."""
        for channel in list(self.channels.values()):
            await self.release(channel, "disconnected")


class Endpoint(Protocol):
    """What a connection needs of its socket endpoint."""

    @property
    def hub(self) -> Hub: ...

    @property
    def limits(self) -> Limits: ...

    def match(self, topic: str) -> tuple[Topic, tuple[Any, ...]] | None: ...


ConnectHandler = Callable[[Connection, dict[str, str]], Awaitable[Any]]
