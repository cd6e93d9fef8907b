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
hub (:mod:`chanlite.hub`) encode a broadcast frame once and write it to every member
socket.

History and presence (``extensions`` ``"history"`` and ``"presence"``) are optional
capabilities: :class:`BaseLayer` parses their declarations alike for every layer and its
default methods raise :class:`NotSupported` naming the layer; their types and rules live in
:mod:`chanlite.layers.streams`. The error tree is in :mod:`chanlite.layers.errors`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import secrets
import signal
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from chanlite.layers import errors
from chanlite.layers.errors import ForeignChannel, LayerConfigError, LayerError, NotSupported
from chanlite.layers.streams import (
    HistoryError,
    HistoryPage,
    HistoryPolicies,
    HistoryPolicy,
    StreamPosition,
    parse_history_option,
)

__all__ = [
    "BaseLayer",
    "BlockingSends",
    "ChannelFull",
    "DecodeError",
    "Event",
    "ForeignChannel",
    "InboxNumbers",
    "LayerConfigError",
    "LayerError",
    "LayerNotFound",
    "LayerUnavailable",
    "Message",
    "NotSupported",
    "layer_gave_up",
]

logger = logging.getLogger("chanlite.layers")

# The error tree lived here before errors.py: the names the package exports from there
# (chanlite.layers) stay importable from here too.
ChannelFull = errors.ChannelFull
DecodeError = errors.DecodeError
LayerNotFound = errors.LayerNotFound
LayerUnavailable = errors.LayerUnavailable

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


@runtime_checkable
class BlockingSends(Protocol):
    """What a layer offers when it can send from plain threads with no event loop.

    :mod:`chanlite.sync` (Django views, scripts, cron) uses these when the layer has them,
    and otherwise runs the async methods on a private loop. Both must be safe to call
    from any thread and must not start an event loop.
    """

    def send_blocking(self, channel: str, message: Event) -> int | None:
        """Blocking :meth:`BaseLayer.send`; raises :class:`ChannelFull` at capacity.

        May return what :meth:`BaseLayer.send_counted` returns (None: cannot tell)."""

    def group_send_blocking(self, group: str, message: Event) -> int | None:
        """Blocking :meth:`BaseLayer.group_send`.

        May return what :meth:`BaseLayer.group_send_counted` returns (None: cannot tell)."""


class InboxNumbers(Protocol):
    """What the hub reads from a layer's local inbox (a
    :class:`~chanlite.layers.LocalInbox` has them) for its metrics."""

    expired: int
    """Deliveries lost to expiry (one per channel of an entry that expired unread)."""
    taken: int
    """Entries taken by readers."""
    waited: float
    """Seconds the taken entries had waited, summed."""


def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


#: At most one drop line per group per this many seconds (the counters stay exact).
DROP_LOG_INTERVAL = 10.0


#: Errors of layers that stopped this process (:meth:`BaseLayer.stop_process`).
_gave_up: list[LayerError] = []


def layer_gave_up() -> LayerError | None:
    """The error of a layer that stopped this process, or None (``chanlite run`` exits
    with status 1 when there is one)."""
    return _gave_up[0] if _gave_up else None


class BaseLayer(ABC):
    """Abstract channel layer: one class per backend, one contract for all of them.

    Subclasses implement the abstract coroutines; validation, capacities, channel names,
    the drop counter and URL option parsing live here so every backend behaves alike.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    MAX_NAME_LENGTH: ClassVar[int] = 100

    #: Whether opening the backend may create its storage (an SQLite file, say). Set it
    #: False before first use to get :class:`StorageNotFound` instead when it is missing:
    #: ``chanlite send`` does, so a typo in a path is an error, not a new empty database.
    #: Backends with nothing to create ignore it.
    create_storage: bool = True

    #: The layer's :class:`~chanlite.layers.LocalInbox`, when it keeps its local channels'
    #: messages in one (every layer built on the toolkit does: set it beside the inbox).
    #: The hub reads its numbers: deliveries lost to expiry, and how long events waited
    #: before this process's reader took them. None: the layer cannot tell.
    local_inbox: InboxNumbers | None = None

    @property
    def storage_created(self) -> bool:
        """Whether this layer object created its backend's storage (a new SQLite file);
        ``chanlite send --create`` reports it. False unless a backend says otherwise."""
        return False

    #: Query-string options accepted by :meth:`from_url`, with their parsers.
    #: Subclasses extend this mapping with their own tuning knobs.
    url_options: ClassVar[Mapping[str, Callable[[str], Any]]] = {
        "capacity": _int,
        "expiry": _float,
        "group_expiry": _float,
        "history": parse_history_option,
        "presence_timeout": _float,
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
        history: Mapping[str, HistoryPolicy] | None = None,
        presence_timeout: float = 30,
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
        # group -> (monotonic time of its last drop line, drop lines suppressed since).
        self._drop_log: dict[str, tuple[float, int]] = {}
        if not presence_timeout > 0:
            raise LayerConfigError(f"presence_timeout must be positive, not {presence_timeout}")
        #: Seconds after which a silent process's presence entries are removed (a layer
        #: shared by processes refreshes its own every third of this).
        self.presence_timeout = float(presence_timeout)
        #: The groups that keep history, by pattern (see :meth:`keep_history`).
        self.history_policies = HistoryPolicies()
        for pattern, policy in (history or {}).items():
            self.keep_history(pattern, policy)

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

    def min_capacity(self) -> int:
        """The smallest capacity any channel has: the default or a ``channel_capacity``."""
        return min([self.capacity, *(capacity for _, capacity in self.channel_capacity)])

    def require_valid_channel_name(self, name: object, receive: bool = False) -> bool:
        """Raise ``TypeError`` unless *name* is a valid channel name (Channels' rules).

        With *receive*, also raise :class:`ForeignChannel` for a process-specific name
        (``...!...``) that this layer object did not make: nothing could ever arrive.
        """
        if not isinstance(name, str) or len(name) >= self.MAX_NAME_LENGTH:
            raise TypeError(self.invalid_name_error.format("Channel"))
        if not self.channel_name_regex.match(name):
            raise TypeError(self.invalid_name_error.format("Channel"))
        if receive and "!" in name and not self.is_local(name):
            raise ForeignChannel(
                f"Cannot receive on {name!r}: it is a process-specific channel made by "
                f"another layer object (this one's channels contain {self.client_id!r}). "
                "Only the layer object whose new_channel() made a channel receives from it; "
                "use that object, or a plain channel name (without '!') to share a queue."
            )
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

    def stop_process(self, error: LayerError) -> None:
        """Give up: this layer can no longer reach the other processes (its storage is
        gone for good), and serving on would be deaf. Records *error* (``chanlite run``
        then exits with status 1, see :func:`layer_gave_up`) and sends this process
        SIGTERM: a graceful shutdown. Log the reason first; this logs nothing."""
        _gave_up.append(error)
        os.kill(os.getpid(), signal.SIGTERM)

    def count_drops(self, group: str, full: Collection[str], members: int | None = None) -> None:
        """Record that one ``group_send`` to *group* dropped its message for *full* channels.

        Counted exactly in :attr:`drops`; logged at INFO as one line per call ("3 of 10
        channels over capacity in group 'x'"), at most one line per group every
        :data:`DROP_LOG_INTERVAL` seconds, the next line saying how many were suppressed.
        *members* is how many members the message was for, when the backend knows.
        """
        if not full:
            return
        self.drops[group] += len(full)
        if not logger.isEnabledFor(logging.INFO):
            return
        now = time.monotonic()
        log = self._drop_log
        last, suppressed = log.get(group, (-DROP_LOG_INTERVAL, 0))
        if now - last < DROP_LOG_INTERVAL:
            log[group] = (last, suppressed + 1)
            return
        if len(log) >= 1024:  # forget groups that have been quiet for a while
            for name in [g for g, (t, _) in log.items() if now - t >= DROP_LOG_INTERVAL]:
                del log[name]
        log[group] = (now, 0)
        of = f"{len(full)} of {members}" if members is not None else f"{len(full)}"
        example = next(iter(full))
        logger.info(
            "%s channel%s over capacity in group %r; message dropped for them "
            "(e.g. %r, capacity %d; %d dropped in this group so far%s)",
            of,
            "" if len(full) == 1 and members is None else "s",
            group,
            example,
            self.get_capacity(example),
            self.drops[group],
            f"; {suppressed} similar lines suppressed" if suppressed else "",
        )

    def count_drop(self, group: str, channel: str) -> None:
        """Record one dropped message for one full *channel* (see :meth:`count_drops`)."""
        self.count_drops(group, (channel,))

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

    async def send_counted(self, channel: str, message: Message) -> int | None:
        """:meth:`send`, returning how many receivers the channel has: 1 or 0 for a
        process-specific channel (``...!...``) whose process is alive or not, None when
        the layer cannot tell (a plain channel is a queue; the default)."""
        await self.send(channel, message)
        return None

    async def group_send_counted(self, group: str, message: Message) -> int | None:
        """:meth:`group_send`, returning how many members *group* had when it was sent,
        or None when the layer cannot tell (the default).

        ``group_send`` itself returns None, as Channels expects; this is what ``chanlite
        send`` uses to say "delivered to 3 members" or "nobody is in the group".
        """
        await self.group_send(group, message)
        return None

    @abstractmethod
    async def flush(self) -> None:
        """Drop every message and group membership this layer can reach."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and background tasks; the layer is not used afterwards."""

    # -- history and presence (optional capabilities) ----------------------------------------
    #
    # A layer that offers them adds "history" / "presence" to ``extensions`` and overrides
    # the coroutines below; these defaults refuse with NotSupported naming the layer.

    def keep_history(self, pattern: str, policy: HistoryPolicy) -> None:
        """Keep history for the groups matching the glob *pattern* (first match wins).

        Also the ``history={pattern: HistoryPolicy}`` constructor option and the URL
        option ``history=room.*:100:600,news:50`` (``PATTERN:SIZE[:TTL]``). Raises
        :class:`NotSupported` on a layer without ``"history"`` in its ``extensions``.
        """
        if "history" not in self.extensions:
            raise NotSupported(
                self,
                "history",
                f"keep_history({pattern!r}) needs a layer with 'history' in its extensions "
                f"(this one has {', '.join(self.extensions)})",
            )
        self.history_policies.add(pattern, policy)

    def history_policy(self, group: str) -> HistoryPolicy | None:
        """The history policy of *group* (first matching pattern), or None: one dict hit."""
        return self.history_policies.lookup(group)

    def require_history(self, group: str) -> HistoryPolicy:
        """*group*'s policy, or :class:`HistoryError` saying that it keeps no history."""
        self.require_valid_group_name(group)
        policy = self.history_policies.lookup(group)
        if policy is None:
            raise HistoryError(
                f"no history is kept for group {group!r}; declare it with keep_history / "
                f"App.history ({self.history_policies.describe()})"
            )
        return policy

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The messages of history group *group*, oldest first.

        With *since* None: everything retained (the newest *limit* if given). With a
        position: exactly the messages after it (the first *limit* if given), or
        :class:`~chanlite.layers.streams.HistoryGap` when that cannot be served exactly.
        """
        raise NotSupported(self, "history")

    async def stream_position(self, group: str) -> StreamPosition:
        """The current position of history group *group* (offset 0 before any message)."""
        raise NotSupported(self, "history")

    async def presence_join(self, group: str, channel: str, key: str, meta: dict[str, Any]) -> None:
        """Announce *channel* in *group* as *key* with *meta* (or update its meta).

        Does not add the channel to the group; sends one ``presence.diff`` to the members.
        """
        raise NotSupported(self, "presence")

    async def presence_leave(self, group: str, channel: str) -> None:
        """Remove *channel*'s presence in *group* (no error if absent)."""
        raise NotSupported(self, "presence")

    async def presence(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """Who is present in *group*: key -> metas, each with ``"ref"`` (its channel)."""
        raise NotSupported(self, "presence")
