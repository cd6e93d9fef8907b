"""Joining a history group from a position: every message once, in order (no I/O here).

A connection that joins a history group "since offset N" must get exactly the messages
after N, then the live ones, even while messages are being sent during the join. The
connection (:meth:`chanlite.websocket.WebSocket.join`) does the I/O in this order and
this module keeps the books:

1. :meth:`StreamJoins.begin` -- from now on the group's live events (they carry
   ``"group"`` and ``"offset"``) are *stashed*, not handed to the handlers;
2. ``group_add`` -- live events start arriving (and are stashed);
3. read the history after N -- it ends at some position P, and may overlap the stash;
4. :meth:`StreamJoins.finish` -- returns the events to queue, in order: the history read,
   then the stashed live events newer than P. Live events at or before P that are still
   on their way (another process's delivery can lag behind its write) are dropped as
   duplicates until the first newer one arrives; from then on the group's events pass
   untouched.

This is exact as long as a layer stores a message and picks its recipients atomically
with respect to ``group_add`` (a member added before a send receives it; one added after
finds it in the history), and delivers one group's messages to a process in offset
order: the contract every history layer keeps.

The stash is bounded: past *max_stash* events it is dropped and the join reads the
history again from where its last read ended (every stashed event is in the history, so
nothing is lost), see :meth:`StreamJoins.overflowed`.
"""

from __future__ import annotations

from typing import Any

from chanlite.layers.streams import HistoryGap, StreamPosition

Event = dict[str, Any]

#: The event a joining connection gets when its position cannot be resumed exactly.
HISTORY_GAP = "history.gap"

#: :meth:`StreamJoins.offer` answers.
PASS, STASHED, DUPLICATE = 0, 1, 2


def gap_event(gap: HistoryGap) -> Event:
    """The ``history.gap`` event for *gap*: the client reloads from its position."""
    return {
        "type": HISTORY_GAP,
        "group": gap.group,
        "reason": gap.reason,
        "offset": gap.position.offset,
        "epoch": gap.position.epoch,
    }


class _Join:
    __slots__ = ("epoch", "offset", "overflow", "stash")

    def __init__(self) -> None:
        self.stash: list[Event] | None = []
        self.overflow = False
        self.epoch = ""
        self.offset = 0


class StreamJoins:
    """The joins in progress, and the duplicate windows after them, of one connection."""

    __slots__ = ("_joins", "max_stash")

    def __init__(self, max_stash: int) -> None:
        self.max_stash = max_stash
        self._joins: dict[str, _Join] = {}

    @property
    def active(self) -> bool:
        """True while some group's events must be looked at (a join or its window)."""
        return bool(self._joins)

    def begin(self, group: str) -> None:
        """Start stashing *group*'s live events (call before ``group_add``)."""
        self._joins[group] = _Join()

    def offer(self, event: Event) -> int:
        """Look at a live event that has an ``"offset"``: :data:`PASS` it on, or say it
        was :data:`STASHED` or dropped as a :data:`DUPLICATE`."""
        group = event.get("group")
        if not isinstance(group, str):
            return PASS  # an application's own "offset" key in some other event
        join = self._joins.get(group)
        if join is None:
            return PASS
        stash = join.stash
        if stash is not None:
            if len(stash) >= self.max_stash:
                stash.clear()  # all of it is in the history: the join reads it again
                join.overflow = True
            else:
                stash.append(event)
            return STASHED
        offset = event.get("offset")
        if event.get("epoch") == join.epoch and isinstance(offset, int) and offset <= join.offset:
            return DUPLICATE
        del self._joins[group]  # newer: nothing older can follow it
        return PASS

    def overflowed(self, group: str) -> bool:
        """True if the stash overflowed since the last read (then: read on, and call
        again); resets the flag."""
        join = self._joins.get(group)
        if join is None or not join.overflow:
            return False
        join.overflow = False
        return True

    def finish(self, group: str, position: StreamPosition) -> list[Event]:
        """End the join at *position* (where the history read ended): the stashed live
        events newer than it, in arrival order. A window then drops late duplicates."""
        join = self._joins.get(group)
        if join is None:
            return []
        stash, join.stash = join.stash or [], None
        join.epoch, join.offset = position.epoch, position.offset
        newer = []
        for event in stash:
            offset = event.get("offset")
            if (
                event.get("epoch") == position.epoch
                and isinstance(offset, int)
                and offset <= position.offset
            ):
                continue
            newer.append(event)
        if newer:
            del self._joins[group]  # a newer event arrived: no late duplicate can follow
        return newer

    def abort(self, group: str) -> list[Event]:
        """Give up a join (its history could not be read): the stashed events, to deliver."""
        join = self._joins.pop(group, None)
        return (join.stash or []) if join is not None else []

    def discard(self, group: str) -> None:
        """Forget *group* (the connection left it)."""
        self._joins.pop(group, None)
