"""History and presence kept in one process's memory (the ``memory://`` layer's store).

The epoch is made when the store is (and again on :meth:`MemoryStreams.clear`): another
layer object, or the same process restarted, is another epoch, because nothing of the
history survives it. Presence entries belong to this layer object and die with it.

Everything here is synchronous bookkeeping; the layer does the delivering.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from chanlite.layers.codec import MsgpackCodec
from chanlite.layers.streams import (
    HistoryPage,
    HistoryPolicy,
    StreamPosition,
    check_limit,
    check_presence,
    check_since,
    check_stream_message,
    presence_diff,
    stream_message,
    with_ref,
)

Event = dict[str, Any]


class _Stream:
    """One group's retained messages ``(stored at, event)`` and its last offset."""

    __slots__ = ("items", "last")

    def __init__(self) -> None:
        self.items: deque[tuple[float, Event]] = deque()
        self.last = 0


class _Present:
    """One group's presence: channel -> (key, meta with "ref") in join order, and how
    many channels each key has (so "first" and "last" cost no scan)."""

    __slots__ = ("channels", "keys")

    def __init__(self) -> None:
        self.channels: dict[str, tuple[str, Event]] = {}
        self.keys: dict[str, int] = {}


class MemoryStreams:
    """The streams and presence entries of one in-memory layer object."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.epoch = secrets.token_hex(8)
        self._streams: dict[str, _Stream] = {}
        self._presence: dict[str, _Present] = {}
        self._codec = MsgpackCodec()

    # -- history ------------------------------------------------------------------------

    def record(self, group: str, policy: HistoryPolicy, message: Event) -> Event:
        """Give *message* the group's next offset, keep it, prune; return the stored event."""
        check_stream_message(group, message)
        stream = self._streams.get(group)
        if stream is None:
            stream = self._streams[group] = _Stream()
        stream.last += 1
        event = stream_message(message, group, stream.last, self.epoch)
        now = self._clock()
        stream.items.append((now, event))
        self._prune(stream, policy, now)
        return event

    def _prune(self, stream: _Stream, policy: HistoryPolicy, now: float) -> None:
        items = stream.items
        while len(items) > policy.size:
            items.popleft()
        if policy.ttl is not None:
            oldest = now - policy.ttl
            while items and items[0][0] <= oldest:
                items.popleft()

    def position(self, group: str) -> StreamPosition:
        """The group's position (offset 0 if nothing was sent to it in this epoch)."""
        stream = self._streams.get(group)
        return StreamPosition(stream.last if stream is not None else 0, self.epoch)

    def read(
        self, group: str, policy: HistoryPolicy, since: StreamPosition | None, limit: int | None
    ) -> HistoryPage:
        """See :meth:`chanlite.layers.base.BaseLayer.history`."""
        limit = check_limit(limit)
        stream = self._streams.get(group)
        position = StreamPosition(stream.last if stream is not None else 0, self.epoch)
        items: deque[tuple[float, Event]] = deque()
        if stream is not None:
            self._prune(stream, policy, self._clock())
            items = stream.items
        if since is None:
            events = [event for _, event in items]
            if limit is not None:
                events = events[len(events) - limit :] if limit else []
            return HistoryPage(events, position)
        oldest = items[0][1]["offset"] if items else None
        check_since(group, since, position, oldest)
        if oldest is None or since.offset == position.offset:
            return HistoryPage([], position)
        start = since.offset + 1 - oldest  # offsets are contiguous in the deque
        stop = len(items) if limit is None else min(len(items), start + limit)
        return HistoryPage([items[i][1] for i in range(start, stop)], position)

    # -- presence -----------------------------------------------------------------------

    def join(self, group: str, channel: str, key: str, meta: Event) -> list[Event]:
        """Add or update *channel*'s entry; return the ``presence.diff`` events to send."""
        check_presence(key, meta, self._codec.encode)
        # The stored meta is a copy: the caller may go on changing its dict.
        entry = with_ref(self._codec.encode_copy(meta)[1], channel)
        diffs: list[Event] = []
        present = self._presence.get(group)
        previous = present.channels.get(channel) if present is not None else None
        if present is not None and previous is not None:
            old_key, old_meta = previous
            if old_key == key:
                present.channels[channel] = (key, entry)
                return [presence_diff(group, joins={key: [entry]}, leaves={key: [old_meta]})]
            diffs.extend(self.leave(group, channel))
        present = self._presence.get(group)
        if present is None:
            present = self._presence[group] = _Present()
        present.channels[channel] = (key, entry)
        count = present.keys.get(key, 0)
        present.keys[key] = count + 1
        diffs.append(presence_diff(group, joins={key: [entry]}, first=not count))
        return diffs

    def leave(self, group: str, channel: str) -> list[Event]:
        """Remove *channel*'s entry; return the ``presence.diff`` to send (none if absent)."""
        present = self._presence.get(group)
        if present is None:
            return []
        previous = present.channels.pop(channel, None)
        if previous is None:
            return []
        key, meta = previous
        left = present.keys[key] - 1
        if left:
            present.keys[key] = left
        else:
            del present.keys[key]
        if not present.channels:
            del self._presence[group]
        return [presence_diff(group, leaves={key: [meta]}, last=not left)]

    def present(self, group: str) -> dict[str, list[Event]]:
        """key -> metas (each with ``"ref"``), in join order."""
        listing: dict[str, list[Event]] = {}
        present = self._presence.get(group)
        for key, meta in present.channels.values() if present is not None else ():
            listing.setdefault(key, []).append(dict(meta))
        return listing

    def clear(self) -> None:
        """Forget every stream and presence entry; a new epoch starts."""
        self._streams.clear()
        self._presence.clear()
        self.epoch = secrets.token_hex(8)
