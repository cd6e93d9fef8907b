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


def lost_event(group: str, since: StreamPosition) -> Event:
    """The ``history.gap`` event (reason ``"unavailable"``) for messages after *since*
    that were dropped for a connection and could not be read back from the history (the
    layer's backend failed): the client reloads from its position."""
    return {
        "type": HISTORY_GAP,
        "group": group,
        "reason": "unavailable",
        "offset": since.offset,
        "epoch": since.epoch,
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


class StreamGaps:
    """The last offset one connection handled in each history group it joined.

    A layer drops a group message for a member whose channel is full (it counts the drop
    and logs it); in a history group that message is still in the history. When a live
    event's offset jumps past the next one, :meth:`check` says where the run it skipped
    starts, so the connection reads it from the history and handles it in its place, in
    order, or learns (a ``history.gap``) that the history no longer has it.

    Broadcast frames reach sockets without passing through the connection, so a jump in
    a group that carries broadcasts may be frames already written: such a group is
    :meth:`forget`-ed as soon as one shows up, and checked again only after a new join.

    A layer built on :class:`~chanlite.layers.LocalInbox` leaves a ``history.missed``
    notice where it dropped (broadcasts included), read back without waiting for a next
    event; this check is what remains for a layer that leaves none.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int] | None] = {}

    def watch(self, group: str) -> None:
        """Start checking *group* (joined now): its next event sets where it is."""
        self._last[group] = None

    def at(self, group: str, position: StreamPosition) -> None:
        """*group* (watched) is known to be at *position* (a join read its history to it)."""
        if group in self._last:
            self._last[group] = (position.epoch, position.offset)

    def handled(self, group: str) -> StreamPosition | None:
        """The position of the last event of watched *group* handled, if known."""
        last = self._last.get(group)
        return None if last is None else StreamPosition(last[1], last[0])

    def forget(self, group: object) -> None:
        """Stop checking *group* (left, or found to carry broadcasts)."""
        if isinstance(group, str):
            self._last.pop(group, None)

    def check(self, event: Event) -> StreamPosition | None:
        """Note a live *event* as handled. If it comes after a jump in the offsets of a
        watched group, return the position after which the missed run starts."""
        group = event.get("group")
        if not isinstance(group, str) or group not in self._last:
            return None
        offset, epoch = event.get("offset"), event.get("epoch")
        if not isinstance(offset, int) or not isinstance(epoch, str):
            return None
        if event.get("type") == HISTORY_GAP:
            self._last[group] = None  # what follows a gap starts afresh
            return None
        last = self._last[group]
        self._last[group] = (epoch, offset)
        if last is None or (epoch == last[0] and offset <= last[1] + 1):
            return None
        return StreamPosition(last[1], last[0])
