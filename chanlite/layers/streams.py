"""History and presence: the types every layer speaks and the rules they share.

**History.** A group declared with a :class:`HistoryPolicy` (by name pattern, see
:meth:`~chanlite.layers.base.BaseLayer.keep_history`) keeps its last messages. Each
message sent to it gets the next *offset* in that group (1, 2, 3, ...) and the group's
*epoch*, a string that changes whenever the backend lost the stream (a restart of the
memory layer, a lost Redis key, a new SQLite file). Members receive the message as
``{**message, "offset": n, "epoch": e, "group": g}``: one dict per send, shared by every
member. ``(offset, epoch)`` is a :class:`StreamPosition`; a client that remembers the last
one it saw asks for exactly what came after it, and gets it, or a :class:`HistoryGap`
saying why it cannot (never a partial history presented as whole).

**Presence.** A connection channel announces itself in a group under a *key* (a user id,
a nickname) with a *meta* dict; the same key on several channels is one entry with
several metas (Phoenix.Presence's shape). Every join and leave sends one
``presence.diff`` event to the group's members (:func:`presence_diff`); ``"first"`` /
``"last"`` mark the key's first meta joining and its last one leaving, which is when an
app says "ada joined" / "ada left".

This module does no I/O: the backends call :func:`check_since` and
:func:`check_presence` so each of them refuses the same inputs with the same errors.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chanlite.layers.errors import LayerConfigError, LayerError

logger = logging.getLogger("chanlite.layers")

__all__ = [
    "HISTORY_MISSED",
    "MAX_PRESENCE_KEY",
    "MAX_PRESENCE_META",
    "PRESENCE_DIFF",
    "HistoryError",
    "HistoryGap",
    "HistoryPage",
    "HistoryPolicies",
    "HistoryPolicy",
    "PresenceError",
    "StreamPosition",
    "check_limit",
    "check_pattern",
    "check_position",
    "check_presence",
    "check_since",
    "check_stream_message",
    "missed_notice",
    "parse_history_option",
    "presence_diff",
    "stream_message",
    "with_ref",
]

#: The event type of presence changes a layer sends to a group's members.
PRESENCE_DIFF = "presence.diff"
#: Longest presence meta, in bytes as the layer's codec encodes it.
MAX_PRESENCE_META = 4096
#: Longest presence key, in characters.
MAX_PRESENCE_KEY = 200
#: The event type of the notice a :class:`~chanlite.layers.LocalInbox` queues for a channel
#: in place of the history messages it had no room for (see :func:`missed_notice`).
HISTORY_MISSED = "history.missed"
#: Keys a history layer adds to each message of a history group (a sender may not set them).
STREAM_KEYS = ("offset", "epoch")


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a group's stream is: the last offset given, and the stream's epoch.

    ``offset`` 0 means nothing was sent yet. A position from one epoch says nothing about
    another: after the epoch changes, offsets start again.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much history a group keeps: at most *size* messages, none older than *ttl* s."""

    size: int
    ttl: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise LayerConfigError(f"history size must be an int of at least 1, not {self.size!r}")
        ttl = self.ttl
        if ttl is not None and (
            isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise LayerConfigError(
                f"history ttl must be a positive number of seconds or None, not {ttl!r}"
            )


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Messages read from a group's history, oldest first, and the stream's position.

    Each event carries ``"offset"``, ``"epoch"`` and ``"group"``; ``events[-1]`` (if any)
    is at or before :attr:`position`. The events may be shared with other readers: do not
    mutate them.
    """

    events: list[dict[str, Any]]
    position: StreamPosition


class HistoryError(LayerError, ValueError):
    """History misuse: a malformed offset, a group that keeps no history, a reserved key."""


GapReason = Literal["epoch", "too_old", "future"]


class HistoryGap(LayerError):
    """The exact history after a position cannot be served; reload from :attr:`position`.

    *reason* is ``"epoch"`` (the stream was lost and restarted since), ``"too_old"``
    (messages after the offset were pruned by size or age) or ``"future"`` (the offset is
    past the stream's end: a client from another server, or a tampered offset).
    """

    def __init__(self, group: str, reason: GapReason, position: StreamPosition) -> None:
        self.group = group
        self.reason: GapReason = reason
        self.position = position
        why = {
            "epoch": "its history was lost and restarted (another epoch)",
            "too_old": "messages after that offset are no longer kept",
            "future": "that offset is past the end of the stream",
        }[reason]
        super().__init__(
            f"Cannot resume group {group!r} exactly: {why}; the stream is at offset "
            f"{position.offset}, epoch {position.epoch!r}. Reload from there."
        )


class PresenceError(LayerError, ValueError):
    """Presence info a layer refuses: a bad key, a meta that is not a dict, too large or
    not encodable."""


# -- declaring history --------------------------------------------------------------------

_GLOB_OK = re.compile(r"^[a-zA-Z\d\-_.*?\[\]!]+$")


def check_pattern(pattern: object) -> str:
    """Return *pattern* if it is a glob that can match a group name, else raise.

    A pattern with characters no group name contains (a space, ``/``, ``:``) could never
    match: a :class:`~chanlite.layers.errors.LayerConfigError` says so at declaration
    rather than the history silently never being kept.
    """
    if not isinstance(pattern, str) or not pattern:
        raise LayerConfigError(f"a history pattern must be a non-empty str, not {pattern!r}")
    if not _GLOB_OK.match(pattern):
        raise LayerConfigError(
            f"the history pattern {pattern!r} can never match a group name: group names "
            "contain only ASCII letters, digits, '-', '_' and '.' (and the pattern may add "
            "the glob characters '*', '?', '[...]')"
        )
    return pattern


def parse_history_option(text: str) -> dict[str, HistoryPolicy]:
    """Parse the ``history=`` URL option: ``PATTERN:SIZE[:TTL]`` items separated by ``,``.

    >>> parse_history_option("room.*:100:600,news:50")
    {'room.*': HistoryPolicy(size=100, ttl=600.0), 'news': HistoryPolicy(size=50, ttl=None)}

    ``:`` and ``,`` never occur in group names, so the form needs no escaping. Patterns
    are globs as in ``channel_capacity``; the first matching one applies to a group.
    """
    policies: dict[str, HistoryPolicy] = {}
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError(
                f"{item!r} is not PATTERN:SIZE or PATTERN:SIZE:TTL (e.g. room.*:100:600)"
            )
        pattern = check_pattern(parts[0])
        try:
            size = int(parts[1])
            ttl = float(parts[2]) if len(parts) == 3 and parts[2] != "" else None
        except ValueError:
            raise ValueError(f"{item!r}: SIZE must be an integer and TTL a number") from None
        policies[pattern] = HistoryPolicy(size, ttl)
    return policies


class HistoryPolicies:
    """The history declarations of one layer: ordered glob patterns, first match wins.

    :meth:`lookup` is on every ``group_send``; its answer is cached per group name (a
    bounded cache), so the plain path costs one dict lookup.
    """

    __slots__ = ("_cache", "_patterns")

    #: Groups whose lookup is remembered; past this the cache starts over.
    CACHE_SIZE = 4096

    def __init__(self, policies: Mapping[str, HistoryPolicy] | None = None) -> None:
        self._patterns: list[tuple[str, re.Pattern[str], HistoryPolicy]] = []
        self._cache: dict[str, HistoryPolicy | None] = {}
        for pattern, policy in (policies or {}).items():
            self.add(pattern, policy)

    def add(self, pattern: str, policy: HistoryPolicy) -> None:
        """Declare *policy* for groups matching *pattern* (replacing an equal pattern's)."""
        check_pattern(pattern)
        if not isinstance(policy, HistoryPolicy):
            raise LayerConfigError(f"a history policy must be a HistoryPolicy, not {policy!r}")
        compiled = re.compile(fnmatch.translate(pattern))
        for index, (known, _, _) in enumerate(self._patterns):
            if known == pattern:
                self._patterns[index] = (pattern, compiled, policy)
                break
        else:
            shadow = next((k for k, _, _ in self._patterns if _shadows(k, pattern)), None)
            if shadow is not None:
                logger.warning(
                    "The history pattern %r never applies: every group it matches also "
                    "matches %r, declared before it (the first matching pattern wins); "
                    "declare the narrower pattern first",
                    pattern,
                    shadow,
                )
            self._patterns.append((pattern, compiled, policy))
        self._cache.clear()

    def lookup(self, group: str) -> HistoryPolicy | None:
        """The policy of *group*: that of the first matching pattern, or None."""
        try:
            return self._cache[group]
        except KeyError:
            pass
        found: HistoryPolicy | None = None
        for _, compiled, policy in self._patterns:
            if compiled.match(group):
                found = policy
                break
        cache = self._cache
        if len(cache) >= self.CACHE_SIZE:
            cache.clear()
        cache[group] = found
        return found

    @property
    def patterns(self) -> dict[str, HistoryPolicy]:
        """The declarations, in the order they are tried."""
        return {pattern: policy for pattern, _, policy in self._patterns}

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def describe(self) -> str:
        """The declared patterns for an error message."""
        if not self._patterns:
            return "no history patterns are declared"
        return "declared patterns: " + ", ".join(repr(p) for p, _, _ in self._patterns)


def _shadows(earlier: str, later: str) -> bool:
    """True when *earlier* certainly matches every group *later* matches.

    Only the sure case is told: *earlier* is a literal prefix followed by ``*`` (``*``,
    ``room.*``) and *later* starts with that literal prefix.
    """
    prefix = earlier[:-1]
    if not earlier.endswith("*") or any(c in prefix for c in "*?[]"):
        return False
    return later.startswith(prefix)


# -- reading history ----------------------------------------------------------------------


def check_position(since: object) -> StreamPosition:
    """Return *since* if it is a well-formed :class:`StreamPosition`, else raise
    :class:`HistoryError` saying what is wrong with it."""
    if not isinstance(since, StreamPosition):
        raise HistoryError(
            f"since must be a StreamPosition(offset, epoch) or None, not {type(since).__name__}"
        )
    offset = since.offset
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise HistoryError(f"a stream offset is an int, not {type(offset).__name__}")
    if offset < 0:
        raise HistoryError(f"a stream offset is 0 or more, not {offset}")
    if not isinstance(since.epoch, str):
        raise HistoryError(f"a stream epoch is a str, not {type(since.epoch).__name__}")
    return since


def check_limit(limit: object) -> int | None:
    """Return *limit* if it is None or an int >= 0, else raise :class:`HistoryError`."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise HistoryError(f"limit must be None or an int of 0 or more, not {limit!r}")
    return limit


def check_since(
    group: str, since: StreamPosition, position: StreamPosition, oldest: int | None
) -> None:
    """Raise :class:`HistoryGap` unless every message after *since* is still kept.

    *position* is the stream's current position and *oldest* the smallest offset still
    retained (None when nothing is). The backends call this while holding whatever makes
    the read consistent (a transaction, a lock), then return the messages with offsets
    ``since.offset + 1 .. position.offset``.
    """
    check_position(since)
    if since.epoch != position.epoch:
        raise HistoryGap(group, "epoch", position)
    if since.offset > position.offset:
        raise HistoryGap(group, "future", position)
    if since.offset == position.offset:
        return
    if oldest is None or oldest > since.offset + 1:
        raise HistoryGap(group, "too_old", position)


def check_stream_message(group: str, message: Mapping[str, Any]) -> None:
    """Refuse a message for a history group that already has ``offset``/``epoch`` keys.

    Those are the layer's to set; a message carrying them was most likely received from a
    history group and sent on unchanged, and would otherwise lie about its position.
    """
    for key in STREAM_KEYS:
        if key in message:
            raise HistoryError(
                f"a message for history group {group!r} may not have an {key!r} key: the "
                "layer assigns offset and epoch (copy the event without them to re-send it)"
            )


def stream_message(
    message: Mapping[str, Any], group: str, offset: int, epoch: str
) -> dict[str, Any]:
    """The message as stored and delivered: ``{**message, "offset", "epoch", "group"}``."""
    event = dict(message)
    event["offset"] = offset
    event["epoch"] = epoch
    event["group"] = group
    return event


def missed_notice(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The notice that stands in for history message *event* dropped for a full channel.

    ``{"type": "history.missed", "group", "epoch", "first", "offset"}``: the channel
    missed the offsets *first* to *offset* of *group* (in *epoch*), where the notice sits
    in its queue; its receiver reads them from the history there, in order (the app does,
    see :meth:`chanlite.websocket.WebSocket.handle_event`). None when *event* is not a
    history message (no int ``"offset"``, str ``"epoch"`` and str ``"group"``).
    """
    offset, epoch, group = event.get("offset"), event.get("epoch"), event.get("group")
    if not (type(offset) is int and isinstance(epoch, str) and isinstance(group, str)):
        return None
    return {
        "type": HISTORY_MISSED,
        "group": group,
        "epoch": epoch,
        "first": offset,
        "offset": offset,
    }


# -- presence ---------------------------------------------------------------------------


def check_presence(key: object, meta: object, encode: Callable[[dict[str, Any]], bytes]) -> bytes:
    """Validate a presence entry; return *meta* encoded with the layer's codec.

    Raises :class:`PresenceError` for a key that is not a str of 1 to
    :data:`MAX_PRESENCE_KEY` characters, a meta that is not a dict with str keys, one
    using the reserved ``"ref"`` key, one the codec cannot encode (with the codec's
    message), or one longer than :data:`MAX_PRESENCE_META` bytes encoded.
    """
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_PRESENCE_KEY:
        shown = repr(key) if not isinstance(key, str) else f"a str of {len(key)} characters"
        raise PresenceError(
            f"a presence key is a str of 1 to {MAX_PRESENCE_KEY} characters, not {shown}"
        )
    if not isinstance(meta, dict):
        raise PresenceError(f"presence meta must be a dict, not {type(meta).__name__}")
    if "ref" in meta:
        raise PresenceError(
            "presence meta may not have a 'ref' key: the layer sets it to the channel name"
        )
    try:
        data = encode(meta)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PresenceError(f"presence meta cannot be encoded: {exc}") from None
    if len(data) > MAX_PRESENCE_META:
        raise PresenceError(
            f"presence meta is {len(data)} bytes encoded; the limit is {MAX_PRESENCE_META}"
        )
    return data


def with_ref(meta: Mapping[str, Any], channel: str) -> dict[str, Any]:
    """*meta* as listed and announced: a copy with ``"ref"`` set to the channel name."""
    entry = dict(meta)
    entry["ref"] = channel
    return entry


def presence_diff(
    group: str,
    *,
    joins: Mapping[str, Iterable[dict[str, Any]]] | None = None,
    leaves: Mapping[str, Iterable[dict[str, Any]]] | None = None,
    first: bool = False,
    last: bool = False,
) -> dict[str, Any]:
    """The ``presence.diff`` event a layer sends to *group*'s members on a join or leave.

    ``first`` is set when a join brings a key's first meta, ``last`` when a leave takes
    its last one (only then is the event included).
    """
    event: dict[str, Any] = {
        "type": PRESENCE_DIFF,
        "group": group,
        "joins": {key: list(metas) for key, metas in (joins or {}).items()},
        "leaves": {key: list(metas) for key, metas in (leaves or {}).items()},
    }
    if first:
        event["first"] = True
    if last:
        event["last"] = True
    return event
