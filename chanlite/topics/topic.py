"""Topic patterns and their handlers: ``socket.topic("room:{name}")`` and its decorators.

A :class:`Topic` is data (a pattern, a join handler, one handler per event) plus the way
to reach every subscriber of one of its topics, in any process: :meth:`Topic.broadcast`.
Nothing here runs per connection; :mod:`chanlite.topics.connection` does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from chanlite.endpoints import as_async
from chanlite.routing import CONVERTORS, Convertor
from chanlite.topics.protocol import encode_broadcast
from chanlite.topics.streams import message_event

if TYPE_CHECKING:
    from chanlite.hub import Hub

__all__ = ["Refused", "Reply", "Topic", "compile_topic", "topic_group"]

F = TypeVar("F", bound=Callable[..., Any])

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")
# A topic segment stops at ":" (Phoenix's separator), as a path segment stops at "/".
_SEGMENT = Convertor("[^:]+", str)
_GROUP_UNSAFE = re.compile(r"[^a-zA-Z0-9\-.]")


class Refused(Exception):
    """Raise in a join or event handler to answer the client with an ``error`` reply.

    ``raise Refused({"reason": "unauthorized"})`` (a str is taken as the reason).
    """

    def __init__(self, response: Any = None) -> None:
        if isinstance(response, str):
            response = {"reason": response}
        super().__init__(response)
        self.response: Any = {} if response is None else response


@dataclass(frozen=True, slots=True)
class Reply:
    """Return from an event handler to choose the reply's status: ``Reply("error", {...})``.

    A handler that returns any other value (not None) replies ``ok`` with it.
    """

    status: str
    response: Any = None


def compile_topic(pattern: str) -> tuple[re.Pattern[str], list[tuple[str, Convertor]]]:
    """Compile a topic pattern; parameters are ``{name}`` (up to the next ``:``),
    ``{name:int}`` and ``{name:path}`` (the rest, ``:`` included).

    >>> regex, params = compile_topic("room:{name}")
    >>> regex.match("room:lobby").group("name"), [name for name, _ in params]
    ('lobby', ['name'])
    """
    if not pattern:
        raise ValueError("A topic pattern must not be empty")
    regex = "^"
    params: list[tuple[str, Convertor]] = []
    index = 0
    for match in _PARAM.finditer(pattern):
        name, kind = match.group(1), match.group(2) or "str"
        convertor = _SEGMENT if kind == "str" else CONVERTORS.get(kind)
        if convertor is None:
            raise ValueError(f"Unknown convertor {kind!r} in topic pattern {pattern!r}")
        if any(name == seen for seen, _ in params):
            raise ValueError(f"Duplicated parameter {name!r} in topic pattern {pattern!r}")
        regex += re.escape(pattern[index : match.start()]) + f"(?P<{name}>{convertor.regex})"
        params.append((name, convertor))
        index = match.end()
    return re.compile(regex + re.escape(pattern[index:]) + "$"), params


def topic_group(topic: str) -> str:
    """The layer group of a topic (a valid Channels group name, the same in every process).

    >>> topic_group("room:lobby")
    'phx.room_3alobby'
    """
    name = "phx." + _GROUP_UNSAFE.sub(lambda m: "".join(f"_{b:02x}" for b in m[0].encode()), topic)
    if len(name) < 100:
        return name
    # Too long for a group name: a digest names it (collisions are not a practical concern).
    return "phx.h." + hashlib.sha256(topic.encode()).hexdigest()


JoinHandler = Callable[..., Awaitable[Any]]
EventHandler = Callable[..., Awaitable[Any]]


class Topic:
    """The topics matching one pattern: who may join, and what each event does.

    ::

        room = socket.topic("room:{name}")

        @room.join
        async def join(channel, name, params): ...     # raise Refused(...) to refuse

        @room.on("new_msg")
        async def new_msg(channel, name, payload):
            return {"ok": True}                           # the reply to the push

    Handlers get the joined :class:`~chanlite.topics.Channel`, the pattern's parameters in
    order, then the payload. Plain ``def`` handlers run on a thread.
    """

    def __init__(
        self, pattern: str, hub: Hub, *, history: int | None = None, presence: bool = False
    ) -> None:
        self.pattern = pattern
        self.regex, self.params = compile_topic(pattern)
        self.hub = hub
        #: Messages kept per topic (None: no history; messages go out as plain broadcasts).
        self.history = history
        #: Whether channels may ``track`` a presence (``presence_state`` / ``presence_diff``).
        self.presence = presence
        self.join_handler: JoinHandler | None = None
        self.leave_handler: JoinHandler | None = None
        self.events: dict[str, EventHandler] = {}

    def __repr__(self) -> str:
        return f"Topic({self.pattern!r})"

    # -- registration -----------------------------------------------------------------------

    def join(self, func: F) -> F:
        """Decorate the join handler ``(channel, *params, join_params)``.

        It may return the join reply's response (a dict); raising :class:`Refused`
        refuses the join. Without one, every join is accepted.
        """
        self.join_handler = as_async(func)
        return func

    def leave(self, func: F) -> F:
        """Decorate a handler ``(channel, *params)`` run when the channel ends, whatever
        ended it (leave, rejoin, close, disconnect, a crash)."""
        self.leave_handler = as_async(func)
        return func

    def on(self, event: str) -> Callable[[F], F]:
        """Decorate the handler of the client's *event* ``(channel, *params, payload)``.

        Its return value (if not None) is the ``ok`` reply; :class:`Reply` picks another
        status; :class:`Refused` replies ``error``.
        """
        if not isinstance(event, str) or not event or event.startswith("phx_"):
            raise ValueError(f"on() needs an event name not starting with 'phx_', not {event!r}")

        def decorator(func: F) -> F:
            if event in self.events:
                raise ValueError(f"{self!r} already handles {event!r}")
            self.events[event] = as_async(func)
            return func

        return decorator

    # -- matching -----------------------------------------------------------------------------

    def match(self, topic: str) -> tuple[Any, ...] | None:
        """The converted parameters of *topic* in pattern order, or None if it does not fit."""
        found = self.regex.match(topic)
        if found is None:
            return None
        return tuple(convertor.convert(found.group(name)) for name, convertor in self.params)

    def topic(self, *args: Any) -> str:
        """Build a topic from the pattern's parameters, in order."""
        if len(args) != len(self.params):
            raise TypeError(f"{self!r} takes {len(self.params)} parameters, not {len(args)}")
        values = iter(args)
        return _PARAM.sub(lambda m: str(next(values)), self.pattern)

    # -- sending ------------------------------------------------------------------------------

    async def broadcast(self, *args: Any) -> None:
        """``broadcast(*params, event, payload)``: to every subscriber of that topic, in
        every process; each process encodes the message once for all its subscribers."""
        if len(args) < 2:
            raise TypeError("broadcast() takes the topic's parameters, then event and payload")
        await self.send(self.topic(*args[:-2]), args[-2], args[-1])

    async def send(self, topic: str, event: str, payload: Any, exclude: str | None = None) -> None:
        """Send *event* to every subscriber of *topic* (one of this pattern's), except the
        layer channel *exclude*. A history topic's message is kept and numbered."""
        if self.history is None:
            await broadcast(self.hub, topic, event, payload, exclude)
        else:
            event_ = message_event(topic, event, payload, exclude)
            await self.hub.group_send(topic_group(topic), event_)


async def broadcast(
    hub: Hub, topic: str, event: str, payload: Any, exclude: str | None = None
) -> None:
    """Send *event* to every subscriber of *topic* (except the layer channel *exclude*)."""
    message = encode_broadcast(topic, event, payload)
    if isinstance(message, str):
        await hub.broadcast(topic_group(topic), text=message, exclude=exclude)
    else:
        await hub.broadcast(topic_group(topic), bytes=message, exclude=exclude)
