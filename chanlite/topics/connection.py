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

from chanlite.layers.base import Event
from chanlite.layers.streams import HistoryGap, StreamPosition
from chanlite.resume import PASS, StreamJoins
from chanlite.topics.protocol import (
    Closed,
    JoinRequest,
    Left,
    Limits,
    PushRequest,
    Refusal,
    SocketProtocol,
)
from chanlite.topics.streams import (
    encoded,
    parse_last,
    parse_since,
    position_ref,
    presence_diff_payload,
    presence_state,
)
from chanlite.topics.topic import Refused, Reply, Topic, topic_group

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

    __slots__ = (
        "_busy",
        "_early",
        "_queue",
        "args",
        "connection",
        "definition",
        "topic",
        "tracked",
    )

    def __init__(
        self, connection: Connection, topic: str, definition: Topic, args: tuple[Any, ...]
    ) -> None:
        self.connection = connection
        self.topic = topic
        self.definition = definition
        self.args = args
        self._queue: deque[PushRequest] | None = None
        self._busy = False
        #: The presence this channel announced (``track``), as (key, meta).
        self.tracked: tuple[str, dict[str, Any]] | None = None
        #: Pushes made while the join is being decided (in the join handler): sent right
        #: after the join reply, as Phoenix's ``send(self(), :after_join)`` idiom does.
        self._early: list[tuple[str, Any]] | None = []

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
        """Send *event* to this client on this topic. Made in the join handler, it goes
        right after the join reply (and not at all if the join is refused); once the
        channel has ended it is dropped, logged at debug."""
        if self.joined:
            self.connection.protocol.push(self.topic, event, payload)
            await self.connection.flush()
        elif self._early is not None:
            self._early.append((event, payload))
        else:
            logger.debug("Push of %r to %r dropped: the channel has ended", event, self)

    async def broadcast(self, event: str, payload: Any) -> None:
        """Send *event* to every subscriber of this topic, in every process."""
        await self.definition.send(self.topic, event, payload)

    async def broadcast_from(self, event: str, payload: Any) -> None:
        """Send *event* to every subscriber of this topic but this client."""
        channel = self.connection.transport.channel_name
        await self.definition.send(self.topic, event, payload, exclude=channel)

    async def track(self, key: str, meta: dict[str, Any] | None = None) -> None:
        """Announce this client in the topic as *key* with *meta* (a topic declared with
        ``presence=True``); called again, it updates the meta. Withdrawn when the channel
        ends. In the join handler it takes effect once the join is accepted."""
        if not self.definition.presence:
            raise RuntimeError(f"{self.definition!r} was not declared with presence=True")
        self.tracked = (key, dict(meta or {}))
        if self.joined:
            await self.connection.hub.presence_join(
                topic_group(self.topic),
                self.connection.transport.channel_name,
                key,
                self.tracked[1],
            )

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

    __slots__ = (
        "_counted",
        "_joins",
        "assigns",
        "channels",
        "clock",
        "endpoint",
        "params",
        "protocol",
        "transport",
    )

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
        self._joins: StreamJoins | None = None  # history joins in progress
        endpoint.hub.stats.topic_connections_open += 1
        self._counted = True  # in hub.stats.topic_connections_open until terminate()

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
            replay: list[Event] = []
            if definition.history is not None:
                since, last = _history_params(params)
                info, replay = await self._join_history(group, since, last)
                response = {**response, "history": info} if isinstance(response, dict) else response
            else:
                # Subscribed before the reply, so nothing broadcast after it is missed.
                await self.hub.group_add(group, self.transport.channel_name)
        except Refused as refusal:
            channel._early = None
            logger.debug("Join of %r refused: %r", request.topic, refusal.response)
            self.protocol.refuse_join(request, refusal.response)
            return False
        except Exception:
            channel._early = None
            logger.exception("Join handler of %r failed for %r", definition, request.topic)
            self.protocol.refuse_join(request, {"reason": "join crashed"})
            await self._discard(request.topic)  # it may have been subscribed already
            return False
        self.channels[request.topic] = channel
        self.protocol.accept_join(request, response)
        for event in replay:
            self._push_message(event)
        if channel.tracked is not None:
            await self._announce(channel, group)
        early, channel._early = channel._early or [], None
        for name, payload in early:
            self.protocol.push(request.topic, name, payload)
        return True

    async def _join_history(
        self, group: str, since: StreamPosition | None, last: int
    ) -> tuple[dict[str, Any], list[Event]]:
        """Subscribe to a history topic and read what the client missed: exactly the
        messages after *since*, then (stashed meanwhile) the live ones, none twice."""
        joins = self._joins
        if joins is None:
            joins = self._joins = StreamJoins(1000)
        joins.begin(group)
        replay: list[Event] = []
        info: dict[str, Any] = {"recovered": True}
        try:
            await self.hub.group_add(group, self.transport.channel_name)
            try:
                page = await self.hub.history(group, since, None if since is not None else last)
            except HistoryGap as gap:
                info = {"recovered": False, "reason": gap.reason}
                page = await self.hub.history(group, None, last)
            replay.extend(page.events)
            while joins.overflowed(group):
                page = await self.hub.history(group, page.position, None)
                replay.extend(page.events)
        except BaseException:
            joins.abort(group)
            raise
        finally:
            if not joins.active:
                self._joins = None
        replay.extend(joins.finish(group, page.position))
        if self._joins is None and joins.active:
            self._joins = joins
        info["offset"], info["epoch"] = page.position.offset, page.position.epoch
        return info, replay

    async def _announce(self, channel: Channel, group: str) -> None:
        """Track *channel*'s presence, then send the client who is here."""
        assert channel.tracked is not None
        key, meta = channel.tracked
        try:
            await self.hub.presence_join(group, self.transport.channel_name, key, meta)
            present = await self.hub.presence(group)
        except Exception:
            logger.exception("Presence of %r in %r failed", key, channel.topic)
            return
        self.protocol.push(channel.topic, "presence_state", presence_state(present))

    def _push_message(self, event: Event) -> None:
        channel = self.channels.get(event.get("topic"))  # type: ignore[arg-type]
        if channel is None:
            return
        ref = position_ref(event.get("offset"), event.get("epoch"))
        self.protocol.push(channel.topic, event["event"], event["payload"], ref)

    async def on_message(self, event: Event) -> None:
        """A message of a history topic, from the layer (numbered): to the client once."""
        joins = self._joins
        if joins is not None and "offset" in event:
            if joins.offer(event) != PASS:
                return  # stashed by a join in progress, or a duplicate of its replay
            if not joins.active:
                self._joins = None
        topic = event.get("topic")
        channel = self.channels.get(topic) if isinstance(topic, str) else None
        if channel is None or event.get("exclude") == self.transport.channel_name:
            return
        await self.flush()  # what the protocol holds goes first
        await self.transport.send([encoded(event)])

    async def on_presence_diff(self, event: Event) -> None:
        """A presence change in a topic's group: ``presence_diff`` to the client."""
        group = event.get("group")
        for channel in self.channels.values():
            if channel.definition.presence and topic_group(channel.topic) == group:
                self.protocol.push(channel.topic, "presence_diff", presence_diff_payload(event))
                await self.flush()
                return

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
        if channel.tracked is not None:
            try:
                await self.hub.presence_leave(
                    topic_group(channel.topic), self.transport.channel_name
                )
            except Exception:
                logger.warning(
                    "Could not withdraw the presence in %r", channel.topic, exc_info=True
                )
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
        if self._counted:
            self._counted = False
            self.hub.stats.topic_connections_open -= 1
        for channel in list(self.channels.values()):
            await self.release(channel, "disconnected")


def _history_params(params: Any) -> tuple[StreamPosition | None, int]:
    """``since`` and ``last`` from a history topic's join params; Refused when malformed."""
    if not isinstance(params, dict):
        return None, 0
    try:
        since = params.get("since")
        return (None if since is None else parse_since(since)), parse_last(params.get("last"))
    except ValueError as exc:
        raise Refused({"reason": "bad history params", "detail": str(exc)}) from None


class Endpoint(Protocol):
    """What a connection needs of its socket endpoint."""

    @property
    def hub(self) -> Hub: ...

    @property
    def limits(self) -> Limits: ...

    def match(self, topic: str) -> tuple[Topic, tuple[Any, ...]] | None: ...


ConnectHandler = Callable[[Connection, dict[str, str]], Awaitable[Any]]
