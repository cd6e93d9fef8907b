"""The Phoenix Channels wire protocol (serializer vsn 2.0.0), Sans-I/O.

Messages in, events and messages out: no sockets, no awaits, no clock of its own. The
connection code (:mod:`chanlite.topics.connection`) feeds each WebSocket message (or
long-poll message) to :meth:`SocketProtocol.receive` and acts on what comes back.

A text message is a JSON array ``[join_ref, ref, topic, event, payload]``. A binary message
starts with a kind byte and one length byte per field::

    push (client -> server, and server -> client without ref)
        0 | len(join_ref) | len(ref) | len(topic) | len(event) | join_ref ref topic event | data
        (server -> client pushes have no ref and no len(ref) byte)
    reply (server -> client)
        1 | len(join_ref) | len(ref) | len(topic) | len(status) | join_ref ref topic status | data
    broadcast (server -> client)
        2 | len(topic) | len(event) | topic event | data

Semantics, as a Phoenix server answers a phoenix.js client:

* ``["phoenix", "heartbeat"]`` is answered with an ``ok`` reply, whatever else is joined.
* ``phx_join`` asks to join a topic; a second join of the same topic first closes the
  first one (``phx_close`` with the old join_ref), then joins anew.
* ``phx_leave`` on a joined topic is answered ``ok`` and followed by ``phx_close``; on a
  topic never joined it is answered ``ok`` too.
* Any other event on a topic that is not joined is answered with the error reply
  ``{"reason": "unmatched topic"}`` and no join_ref.
* A message whose join_ref is not the topic's current one is stale (from before a rejoin)
  and is ignored.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "BROADCAST_KIND",
    "PUSH_KIND",
    "REPLY_KIND",
    "Closed",
    "Frame",
    "FrameError",
    "Heartbeat",
    "JoinRequest",
    "Left",
    "Limits",
    "PushRequest",
    "Refusal",
    "SocketProtocol",
    "decode",
    "encode_broadcast",
    "encode_message",
    "encode_reply",
]

PUSH_KIND: Final = 0
REPLY_KIND: Final = 1
BROADCAST_KIND: Final = 2

PHX_JOIN: Final = "phx_join"
PHX_LEAVE: Final = "phx_leave"
PHX_REPLY: Final = "phx_reply"
PHX_CLOSE: Final = "phx_close"
PHX_ERROR: Final = "phx_error"
HEARTBEAT_TOPIC: Final = "phoenix"

#: What a client may not send as a push event: the protocol's own reply/close/error.
RESERVED_EVENTS: Final = frozenset({PHX_REPLY, PHX_CLOSE, PHX_ERROR})

UNMATCHED: Final[Mapping[str, str]] = {"reason": "unmatched topic"}
TOO_MANY: Final[Mapping[str, str]] = {"reason": "too many channels joined"}
JOIN_RATE: Final[Mapping[str, str]] = {"reason": "join rate exceeded"}

#: The longest join_ref, ref, topic, event or status a binary message can carry.
MAX_FIELD: Final = 255

Payload = Any
"""A JSON value (a dict for the client's pushes, usually) or ``bytes`` (binary messages)."""


class FrameError(ValueError):
    """A message that is not a Phoenix frame; ``code`` is the WebSocket close code to use."""

    def __init__(self, message: str, code: int = 1007) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded message: ``[join_ref, ref, topic, event, payload]``."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Payload


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _ref(value: Any, name: str) -> str | None:
    # phoenix.js sends refs as strings; other clients send numbers. Both name the same ref.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FrameError(f"{name} must be a string or null, not {type(value).__name__}")


def decode(message: str | bytes) -> Frame:
    """Decode one client message (a text JSON array, or a binary push).

    >>> decode('["1","1","room:lobby","phx_join",{}]')
    Frame(join_ref='1', ref='1', topic='room:lobby', event='phx_join', payload={})

    Raises :class:`FrameError` saying exactly what is wrong.
    """
    if isinstance(message, str):
        return _decode_text(message)
    return _decode_binary(bytes(message))


def _decode_text(text: str) -> Frame:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"message is not JSON ({exc})") from None
    if not isinstance(value, list):
        raise FrameError(
            f"message must be a JSON array [join_ref, ref, topic, event, payload], "
            f"not a {type(value).__name__}"
        )
    if len(value) != 5:
        raise FrameError(
            f"message must have 5 elements [join_ref, ref, topic, event, payload], not {len(value)}"
        )
    join_ref, ref, topic, event, payload = value
    return Frame(_ref(join_ref, "join_ref"), _ref(ref, "ref"), _name(topic, "topic"),
                 _name(event, "event"), payload)  # fmt: skip


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FrameError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise FrameError(f"{what} must not be empty")
    return value


def _decode_binary(data: bytes) -> Frame:
    if len(data) < 5:
        raise FrameError(f"binary message of {len(data)} bytes is shorter than its 5-byte header")
    kind = data[0]
    if kind != PUSH_KIND:
        raise FrameError(f"binary message of kind {kind}: a client may only send pushes (kind 0)")
    sizes = data[1:5]
    end = 5 + sum(sizes)
    if len(data) < end:
        raise FrameError(
            f"binary message of {len(data)} bytes is shorter than its header says ({end})"
        )
    fields: list[str] = []
    offset = 5
    for size, name in zip(sizes, ("join_ref", "ref", "topic", "event"), strict=True):
        try:
            fields.append(data[offset : offset + size].decode())
        except UnicodeDecodeError:
            raise FrameError(f"binary message's {name} is not UTF-8") from None
        offset += size
    join_ref, ref, topic, event = fields
    return Frame(join_ref or None, ref or None, _name(topic, "topic"), _name(event, "event"),
                 data[end:])  # fmt: skip


def _field(value: str | None, name: str) -> bytes:
    raw = (value or "").encode()
    if len(raw) > MAX_FIELD:
        raise ValueError(f"{name} is {len(raw)} bytes; a binary message carries at most 255")
    return raw


def encode_message(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: Payload
) -> str | bytes:
    """A server message (push, close, error): JSON text, or a binary push for bytes.

    >>> encode_message("1", None, "room:1", "new_msg", {"body": "hi"})
    '["1",null,"room:1","new_msg",{"body":"hi"}]'
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        head = [_field(join_ref, "join_ref"), _field(topic, "topic"), _field(event, "event")]
        sizes = struct.pack("BBBB", PUSH_KIND, *map(len, head))
        return sizes + b"".join(head) + bytes(payload)
    return _dumps([join_ref, ref, topic, event, payload])


def encode_reply(
    join_ref: str | None, ref: str | None, topic: str, status: str, response: Payload
) -> str | bytes:
    """A ``phx_reply`` to the push *ref*: ``{"status": ..., "response": ...}`` or binary.

    >>> encode_reply(None, "3", "phoenix", "ok", {})
    '[null,"3","phoenix","phx_reply",{"status":"ok","response":{}}]'
    """
    if isinstance(response, bytes | bytearray | memoryview):
        head = [
            _field(join_ref, "join_ref"),
            _field(ref, "ref"),
            _field(topic, "topic"),
            _field(status, "status"),
        ]
        return struct.pack("5B", REPLY_KIND, *map(len, head)) + b"".join(head) + bytes(response)
    return _dumps([join_ref, ref, topic, PHX_REPLY, {"status": status, "response": response}])


def encode_broadcast(topic: str, event: str, payload: Payload) -> str | bytes:
    """A broadcast to every subscriber of *topic*: the same message for all of them.

    >>> encode_broadcast("room:1", "new_msg", {"n": 1})
    '[null,null,"room:1","new_msg",{"n":1}]'
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        head = [_field(topic, "topic"), _field(event, "event")]
        return struct.pack("3B", BROADCAST_KIND, *map(len, head)) + b"".join(head) + bytes(payload)
    return _dumps([None, None, topic, event, payload])


# -- what the protocol asks of its caller ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """Join *topic*: run its join handler, then :meth:`SocketProtocol.accept_join` or
    :meth:`SocketProtocol.refuse_join` with the same *join_ref* and *ref*."""

    topic: str
    join_ref: str | None
    ref: str | None
    params: Payload


@dataclass(frozen=True, slots=True)
class PushRequest:
    """An event for a joined *topic*: run its handler; reply to *ref* if there is one."""

    topic: str
    event: str
    ref: str | None
    payload: Payload


@dataclass(frozen=True, slots=True)
class Left:
    """*topic* is no longer joined (``reason``: "leave", "rejoin"): release what it held."""

    topic: str
    reason: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The client's heartbeat, already answered."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message refused without closing the connection, answered to its topic (if it
    asked for a reply). ``detail`` is for the log."""

    topic: str
    detail: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection must close with *code*: the message could not be read at all."""

    code: int
    reason: str
    detail: str


Event = JoinRequest | PushRequest | Left | Heartbeat | Refusal | Closed


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do.

    *max_topics*: topics joined at once (Phoenix's ``max_channels_per_transport``).
    *max_message*: bytes in one client message (larger closes with 1009).
    *join_rate* / *join_burst*: joins per second sustained / at once (a token bucket);
    a join over it is refused with ``{"reason": "join rate exceeded"}``.
    """

    max_topics: int = 100
    max_message: int = 1024 * 1024
    join_rate: float = 20.0
    join_burst: int = 40

    def __post_init__(self) -> None:
        for name in ("max_topics", "max_message", "join_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1")
        if self.join_rate <= 0:
            raise ValueError("Limits.join_rate must be positive")


@dataclass(slots=True)
class _Joined:
    join_ref: str | None


@dataclass(slots=True)
class SocketProtocol:
    """One connection's protocol state: which topics are joined, with which join_ref.

    :meth:`receive` takes one client message and the current time (seconds, any monotonic
    clock) and returns the events to act on; the messages to send are collected in
    :attr:`outgoing` (take them with :meth:`data_to_send`).
    """

    limits: Limits = field(default_factory=Limits)
    joined: dict[str, _Joined] = field(default_factory=dict)
    pending: dict[str, str | None] = field(default_factory=dict)  # topic -> join_ref
    outgoing: list[str | bytes] = field(default_factory=list)
    _tokens: float = -1.0
    _stamp: float = 0.0

    def data_to_send(self) -> list[str | bytes]:
        """The messages to send, in order, since the last call."""
        out, self.outgoing = self.outgoing, []
        return out

    def join_ref(self, topic: str) -> str | None:
        """The join_ref of joined *topic* (KeyError if it is not joined)."""
        return self.joined[topic].join_ref

    def receive(self, message: str | bytes, now: float) -> list[Event]:
        """Read one client message; return what the caller must do about it."""
        limit = self.limits.max_message
        if len(message) * (1 if isinstance(message, bytes) else 4) > limit:
            size = len(message) if isinstance(message, bytes) else len(message.encode())
            if size > limit:
                return [
                    Closed(
                        1009,
                        "message too big",
                        f"a message of {size} bytes (the limit is {limit})",
                    )
                ]
        try:
            frame = decode(message)
        except FrameError as exc:
            return [Closed(exc.code, "invalid message", str(exc))]
        return self.receive_frame(frame, now)

    def receive_frame(self, frame: Frame, now: float) -> list[Event]:
        """Act on one decoded client frame (see :meth:`receive`)."""
        topic, event = frame.topic, frame.event
        if topic == HEARTBEAT_TOPIC and event == "heartbeat":
            self.outgoing.append(encode_reply(None, frame.ref, topic, "ok", {}))
            return [Heartbeat()]
        if event == PHX_JOIN:
            return self._join(frame, now)
        current = self.joined.get(topic)
        if event == PHX_LEAVE:
            if current is None:
                self.outgoing.append(encode_reply(frame.join_ref, frame.ref, topic, "ok", {}))
                return []
            if frame.join_ref is not None and frame.join_ref != current.join_ref:
                return [Refusal(topic, f"stale phx_leave (join_ref {frame.join_ref!r})")]
            del self.joined[topic]
            self.outgoing.append(encode_reply(current.join_ref, frame.ref, topic, "ok", {}))
            self.outgoing.append(
                encode_message(current.join_ref, current.join_ref, topic, PHX_CLOSE, {})
            )
            return [Left(topic, "leave")]
        if current is None:
            self.outgoing.append(encode_reply(None, frame.ref, topic, "error", UNMATCHED))
            return [Refusal(topic, f"{event!r} to a topic that is not joined")]
        if frame.join_ref is not None and frame.join_ref != current.join_ref:
            return [Refusal(topic, f"stale {event!r} (join_ref {frame.join_ref!r})")]
        if event in RESERVED_EVENTS:
            self.refuse(topic, frame.ref, {"reason": f"{event} is the server's event"})
            return [Refusal(topic, f"client sent the server's event {event!r}")]
        return [PushRequest(topic, event, frame.ref, frame.payload)]

    def _join(self, frame: Frame, now: float) -> list[Event]:
        topic = frame.topic
        events: list[Event] = []
        if topic in self.pending:
            # A join while the previous one still runs its handler: refuse the new one.
            self.outgoing.append(
                encode_reply(frame.join_ref, frame.ref, topic, "error", {"reason": "join pending"})
            )
            return [Refusal(topic, "phx_join while a join of the same topic is pending")]
        if not self._take_token(now):
            self.outgoing.append(encode_reply(frame.join_ref, frame.ref, topic, "error", JOIN_RATE))
            return [Refusal(topic, f"join over the rate limit ({self.limits.join_rate}/s)")]
        old = self.joined.pop(topic, None)
        if old is not None:
            # A second join replaces the first: the old channel is closed first.
            self.outgoing.append(encode_message(old.join_ref, old.join_ref, topic, PHX_CLOSE, {}))
            events.append(Left(topic, "rejoin"))
        if len(self.joined) + len(self.pending) >= self.limits.max_topics:
            self.outgoing.append(encode_reply(frame.join_ref, frame.ref, topic, "error", TOO_MANY))
            events.append(Refusal(topic, f"join past the limit of {self.limits.max_topics} topics"))
            return events
        self.pending[topic] = frame.join_ref
        events.append(JoinRequest(topic, frame.join_ref, frame.ref, frame.payload))
        return events

    def _take_token(self, now: float) -> bool:
        limits = self.limits
        if self._tokens < 0:
            self._tokens, self._stamp = float(limits.join_burst), now
        self._tokens = min(
            float(limits.join_burst), self._tokens + (now - self._stamp) * limits.join_rate
        )
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # -- the caller's answers ---------------------------------------------------------------

    def accept_join(self, request: JoinRequest, response: Payload) -> None:
        """The join handler accepted: reply ``ok`` with *response*; the topic is joined."""
        self.pending.pop(request.topic, None)
        self.joined[request.topic] = _Joined(request.join_ref)
        self.outgoing.append(
            encode_reply(request.join_ref, request.ref, request.topic, "ok", response)
        )

    def refuse_join(self, request: JoinRequest, response: Payload, unmatched: bool = False) -> None:
        """The join was refused: reply ``error`` with *response* (no join_ref when no topic
        pattern matched, as Phoenix answers)."""
        self.pending.pop(request.topic, None)
        join_ref = None if unmatched else request.join_ref
        self.outgoing.append(encode_reply(join_ref, request.ref, request.topic, "error", response))

    def reply(self, topic: str, ref: str | None, status: str, response: Payload) -> bool:
        """Reply to the push *ref* on joined *topic*; False (nothing sent) if not joined."""
        current = self.joined.get(topic)
        if current is None or ref is None:
            return False
        self.outgoing.append(encode_reply(current.join_ref, ref, topic, status, response))
        return True

    def refuse(self, topic: str, ref: str | None, response: Payload) -> None:
        """Answer the push *ref* on *topic* with an ``error`` reply (when it has a ref)."""
        if ref is None:
            return
        current = self.joined.get(topic)
        join_ref = current.join_ref if current is not None else None
        self.outgoing.append(encode_reply(join_ref, ref, topic, "error", response))

    def push(self, topic: str, event: str, payload: Payload, ref: str | None = None) -> bool:
        """Push *event* to the client on joined *topic*; False if it is not joined.

        *ref* is None for a push (Phoenix's); history messages carry their position there.
        """
        current = self.joined.get(topic)
        if current is None:
            return False
        self.outgoing.append(encode_message(current.join_ref, ref, topic, event, payload))
        return True

    def close(self, topic: str) -> bool:
        """Close joined *topic* from the server (``phx_close``); False if not joined."""
        current = self.joined.pop(topic, None)
        if current is None:
            return False
        self.outgoing.append(
            encode_message(current.join_ref, current.join_ref, topic, PHX_CLOSE, {})
        )
        return True

    def error(self, topic: str, reason: str = "channel_crash") -> bool:
        """The topic's handler failed: ``phx_error`` (the client rejoins); False if not joined."""
        current = self.joined.pop(topic, None)
        if current is None:
            return False
        self.outgoing.append(
            encode_message(current.join_ref, current.join_ref, topic, PHX_ERROR, {"reason": reason})
        )
        return True
