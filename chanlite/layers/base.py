"""The channel layer contract every layer implements.

The API follows Django Channels' channel layer spec, so a chanlite layer is also a valid
``CHANNEL_LAYERS`` backend: ``send``, ``receive``, ``new_channel``, ``group_add``,
``group_discard``, ``group_send``, ``flush``, ``close``, with ``extensions = ["groups",
"flush"]`` and the same name rules.

chanlite adds one method, :meth:`BaseLayer.receive_local`, so a process needs a single
reader for all of its connections: every channel made by :meth:`BaseLayer.new_channel` on
one layer object is *local* to it, and ``receive_local`` yields each message addressed to
any of them together with the local channels it is for. A group message therefore crosses
into a process once and names all of that process's members, which is what lets the
dispatcher encode a broadcast frame once and write it to every member socket.

Exceptions::

    LayerError
     +-- ChannelFull          (send() to a channel at capacity)
     +-- LayerConfigError     (also ValueError: bad URL, unknown or malformed option)
     +-- LayerNotFound        (also LookupError: no plugin for a URL scheme)
"""

from __future__ import annotations

import fnmatch
import logging
import re
import secrets
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

logger = logging.getLogger("chanlite.layers")

Event = dict[str, Any]
"""An event: a dict with a ``"type"`` key naming its handler, e.g. ``"chat.message"``.

What travels through a channel layer is called an *event* everywhere in chanlite (the
Channels spec calls it a "message"; the layer methods keep its parameter name ``message``
so Channels code calling them by keyword still works). ``chanlite.types.Message`` is an
ASGI message, a different thing.
"""

Message = Event
"""The Channels spec's name for :data:`Event`, kept for code written against it."""

L = TypeVar("L", bound="BaseLayer")


class LayerError(Exception):
    """Base class of every channel layer error."""


class ChannelFull(LayerError):
    """``send()`` found the channel at capacity; the message was not stored."""


class LayerConfigError(LayerError, ValueError):
    """A layer URL or option is malformed or unknown."""


class LayerNotFound(LayerError, LookupError):
    """No installed plugin provides the layer URL's scheme."""


@runtime_checkable
class BlockingSends(Protocol):
    """What a layer offers when it can send from plain threads with no event loop.

    :mod:`chanlite.sync` (Django views, scripts, cron) uses these when the layer has them,
    and otherwise runs the async methods on a private loop. Both must be safe to call
    from any thread and must not start an event loop.
    """

    def send_blocking(self, channel: str, message: Event) -> None:
        """Blocking :meth:`BaseLayer.send`; raises :class:`ChannelFull` at capacity."""

    def group_send_blocking(self, group: str, message: Event) -> None:
        """Blocking :meth:`BaseLayer.group_send`."""


def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


def release_pending(pending: dict[str, int], channels: Sequence[str]) -> None:
    """Take one off each of *channels*' counts of queued messages, forgetting zeros.

    The bookkeeping behind per-channel capacity for a queue whose entries name the
    channels they are for (the in-process queue of a layer's ``receive_local``).
    """
    for channel in channels:
        left = pending[channel] - 1
        if left:
            pending[channel] = left
        else:
            del pending[channel]


class BaseLayer(ABC):
    """Abstract channel layer: one class per backend, one contract for all of them.

    Subclasses implement the abstract coroutines; validation, capacities, channel names,
    the drop counter and URL option parsing live here so every backend behaves alike.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    MAX_NAME_LENGTH: ClassVar[int] = 100

    #: Query-string options accepted by :meth:`from_url`, with their parsers.
    #: Subclasses extend this mapping with their own tuning knobs.
    url_options: ClassVar[Mapping[str, Callable[[str], Any]]] = {
        "capacity": _int,
        "expiry": _float,
        "group_expiry": _float,
    }

    channel_name_regex: ClassVar[re.Pattern[str]] = re.compile(r"^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$")
    group_name_regex: ClassVar[re.Pattern[str]] = re.compile(r"^[a-zA-Z\d\-_.]+$")
    invalid_name_error: ClassVar[str] = (
        "{} name must be a valid unicode string with length < "
        f"{MAX_NAME_LENGTH} containing only ASCII alphanumerics, hyphens, underscores, "
        "or periods."
    )

    def __init__(
        self,
        *,
        capacity: int = 100,
        expiry: float = 60,
        group_expiry: float = 86400,
        channel_capacity: Mapping[str | re.Pattern[str], int] | None = None,
    ) -> None:
        if capacity < 1:
            raise LayerConfigError(f"capacity must be at least 1, not {capacity}")
        if expiry <= 0 or group_expiry <= 0:
            raise LayerConfigError("expiry and group_expiry must be positive")
        self.capacity = capacity
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        #: Identifies this layer object in the names of its local channels (no dots).
        self.client_id = secrets.token_hex(6)
        #: Messages dropped by ``group_send`` because a member was full, by group.
        self.drops: Counter[str] = Counter()

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_url(cls: type[L], url: str) -> L:
        """Build a layer from its URL, e.g. ``memory://?capacity=10``.

        Query parameters become keyword arguments through :attr:`url_options`; an unknown
        or malformed one raises :class:`LayerConfigError` naming it. Backends that read
        a host or a path override this and call :meth:`parse_url_options`.
        """
        return cls(**cls.parse_url_options(url))

    @classmethod
    def parse_url_options(cls, url: str) -> dict[str, Any]:
        """Parse *url*'s query string into keyword arguments for the constructor."""
        query = urlsplit(url).query
        options: dict[str, Any] = {}
        for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            parser = cls.url_options.get(key)
            if parser is None:
                known = ", ".join(sorted(cls.url_options))
                raise LayerConfigError(
                    f"Unknown option {key!r} in layer URL {url!r}; known options: {known}"
                )
            try:
                options[key] = parser(raw)
            except (TypeError, ValueError) as exc:
                raise LayerConfigError(
                    f"Malformed value {raw!r} for option {key!r} in layer URL {url!r}: {exc}"
                ) from None
        return options

    # -- capacity and names (Channels-compatible) ---------------------------------

    @staticmethod
    def compile_capacities(
        channel_capacity: Mapping[str | re.Pattern[str], int],
    ) -> list[tuple[re.Pattern[str], int]]:
        """Compile ``{glob or regex: capacity}`` into ordered ``(pattern, capacity)`` pairs."""
        result = []
        for pattern, value in channel_capacity.items():
            if isinstance(pattern, re.Pattern):
                result.append((pattern, value))
            else:
                result.append((re.compile(fnmatch.translate(pattern)), value))
        return result

    def get_capacity(self, channel: str) -> int:
        """The capacity of *channel*: the first matching ``channel_capacity`` or the default."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity

    def require_valid_channel_name(self, name: object, receive: bool = False) -> bool:
        """Raise ``TypeError`` unless *name* is a valid channel name (Channels' rules)."""
        if not isinstance(name, str) or len(name) >= self.MAX_NAME_LENGTH:
            raise TypeError(self.invalid_name_error.format("Channel"))
        if not self.channel_name_regex.match(name):
            raise TypeError(self.invalid_name_error.format("Channel"))
        return True

    def require_valid_group_name(self, name: object) -> bool:
        """Raise ``TypeError`` unless *name* is a valid group name (Channels' rules)."""
        if not isinstance(name, str) or len(name) >= self.MAX_NAME_LENGTH:
            raise TypeError(self.invalid_name_error.format("Group"))
        if not self.group_name_regex.match(name):
            raise TypeError(self.invalid_name_error.format("Group"))
        return True

    @staticmethod
    def require_valid_message(message: object) -> None:
        """Raise ``TypeError`` unless *message* is a dict with a string ``"type"``."""
        if not isinstance(message, dict):
            raise TypeError(f"A layer message must be a dict, not {type(message).__name__}")
        if not isinstance(message.get("type"), str):
            raise TypeError('A layer message must have a "type" key with a string value')

    @staticmethod
    def non_local_name(name: str) -> str:
        """The part of a process-specific name up to and including ``!``, else *name*."""
        bang = name.find("!")
        return name if bang < 0 else name[: bang + 1]

    @staticmethod
    def owner_of(channel: str) -> str | None:
        """The ``client_id`` of the layer object that made *channel*, or None.

        ``new_channel("specific")`` makes ``"specific.<client_id>!<token>"``; the owner is
        the last dotted part before ``!``. Backends route direct sends with it.
        """
        bang = channel.find("!")
        if bang < 0:
            return None
        return channel[:bang].rpartition(".")[2]

    def is_local(self, channel: str) -> bool:
        """True if *channel* was made by :meth:`new_channel` on this layer object."""
        return self.owner_of(channel) == self.client_id

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new channel name local to this layer object (received by ``receive_local``)."""
        name = f"{prefix}.{self.client_id}!{secrets.token_hex(8)}"
        self.require_valid_channel_name(name)
        return name

    def count_drop(self, group: str, channel: str) -> None:
        """Record that ``group_send`` to *group* dropped a message for a full *channel*."""
        self.drops[group] += 1
        logger.warning(
            "group_send(%r): channel %r is full (capacity %d); message dropped for it",
            group,
            channel,
            self.get_capacity(channel),
        )

    @property
    def dropped(self) -> int:
        """Total messages ``group_send`` dropped for full members since the layer was made."""
        return sum(self.drops.values())

    # -- the contract ---------------------------------------------------------------

    @abstractmethod
    async def send(self, channel: str, message: Message) -> None:
        """Queue *message* on *channel*; raise :class:`ChannelFull` at capacity."""

    @abstractmethod
    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message on *channel* (FIFO; one reader gets each)."""

    @abstractmethod
    async def receive_local(self) -> tuple[Sequence[str], Message]:
        """Wait for the next message for any local channel: ``(local channels, message)``.

        A direct send yields one channel; a group message yields every local member at
        once. The message object may be shared between channels: do not mutate it.
        """

    @abstractmethod
    async def group_add(self, group: str, channel: str) -> None:
        """Add *channel* to *group* (refreshing its ``group_expiry``)."""

    @abstractmethod
    async def group_discard(self, group: str, channel: str) -> None:
        """Remove *channel* from *group*; no error if it was not a member."""

    @abstractmethod
    async def group_send(self, group: str, message: Message) -> None:
        """Send *message* to every member of *group*; full members are dropped and counted."""

    @abstractmethod
    async def flush(self) -> None:
        """Drop every message and group membership this layer can reach."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and background tasks; the layer is not used afterwards."""
