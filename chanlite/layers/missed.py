"""Notices of history messages a full channel missed, kept in its place in the inbox.

A ``group_send`` never waits for a full member: the layer drops the message for it and
counts the drop. In a history group the message is still in the history, so the inbox
queues a small notice for that channel instead (:func:`~chanlite.layers.streams.missed_notice`):
``{"type": "history.missed", "group", "epoch", "first", "offset"}``. It sits exactly where
the message would have been, so the receiver reads the missed run from the history when
it reaches the notice -- once it has room again, with no later message needed to show the
gap -- and handles it in order, before anything newer of that group.

Bounded: a drop for a channel whose newest entry of that group is already a notice still
in the queue widens that notice (its ``"offset"``) instead of queueing another. A new
notice needs a message of the group queued for the channel since the last one, and
messages are queued only while the channel has room (notices count against it), so a
channel holds at most its capacity plus one entry, notices included.

No cost while nothing is dropped: the inbox looks here only when a notice is open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chanlite.layers.streams import missed_notice

Event = dict[str, Any]

#: Open notices kept before the stale ones (already taken from the queue) are swept.
SWEEP_AT = 1024


class MissedNotices:
    """The open notices of one inbox: group -> channel -> (entry number, notice).

    Entries are numbered in the order they are queued; with *gone* entries having left
    the (FIFO) queue, an entry numbered below *gone* was taken or expired: its notice can
    no longer be widened.
    """

    __slots__ = ("_open", "_size")

    def __init__(self) -> None:
        self._open: dict[str, dict[str, tuple[int, Event]]] = {}
        self._size = 0

    def __bool__(self) -> bool:
        return self._size > 0

    def queued(self, channels: Sequence[str], event: Event, gone: int) -> None:
        """*event* was just queued for *channels*: their open notices of its group close
        (a later drop must be noticed after it, not before)."""
        group = event.get("group")
        notices = self._open.get(group) if isinstance(group, str) else None
        if not notices:
            return
        assert isinstance(group, str)
        self._sweep(group, notices, gone)
        for channel in channels:
            if notices.pop(channel, None) is not None:
                self._size -= 1
        if not notices:
            self._open.pop(group, None)

    def missed(
        self, channels: Sequence[str], event: Event, number: int, gone: int
    ) -> list[tuple[str, Event]]:
        """*event* was dropped for *channels*: widen their open notices, and return the new
        notices to queue, with their channels (one entry each, numbered from *number* on)."""
        notice = missed_notice(event)
        if notice is None:
            return []
        group, epoch, offset = notice["group"], notice["epoch"], notice["offset"]
        notices = self._open.get(group)
        if notices is None:
            notices = self._open[group] = {}
        else:
            self._sweep(group, notices, gone)
            notices = self._open.setdefault(group, notices)
        new: list[tuple[str, Event]] = []
        for channel in channels:
            found = notices.get(channel)
            if found is not None and found[1]["epoch"] == epoch and found[1]["offset"] < offset:
                found[1]["offset"] = offset
                continue
            fresh = dict(notice) if new else notice
            if found is None:
                self._size += 1
            notices[channel] = (number + len(new), fresh)
            new.append((channel, fresh))
        if self._size > SWEEP_AT:
            for name, open_ in list(self._open.items()):
                self._sweep(name, open_, gone)
        return new

    def _sweep(self, group: str, notices: dict[str, tuple[int, Event]], gone: int) -> None:
        stale = [channel for channel, (number, _) in notices.items() if number < gone]
        for channel in stale:
            del notices[channel]
        self._size -= len(stale)
        if not notices:
            self._open.pop(group, None)

    def clear(self) -> None:
        """Forget every notice (the inbox was cleared)."""
        self._open.clear()
        self._size = 0
