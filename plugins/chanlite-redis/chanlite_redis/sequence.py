"""Numbering group messages so that a receiver counts the ones it never heard.

Pub/sub is at-most-once: a message published while a process's pub/sub connection is
down (Redis restarted, Sentinel failed over to another server, the connection was cut
for its output buffer) never reaches that process. History groups fill such gaps from
their stream (:mod:`chanlite_redis.catchup`); for every other group the loss must at
least not be silent. So every process numbers the plain group messages it publishes,
1, 2, 3, ... per group (:class:`Numbering`), and every receiving process tracks, per
group and sender, the next number it expects (:class:`Gaps`). A number skipped is a
message this process did not hear: once it has stayed missing for a grace period (a
sender's concurrent sends may reach Redis out of order, over different connections) it
is counted in the layer's ``lost`` counter and logged.

Direct messages to another process's channels are numbered the same way, per receiving
process rather than per group (:class:`DirectNumbering`): each entry a sender queues in
that process's inbox carries ``\1``, the sender's id, its number and how many of its
earlier sends to that process the inbox refused (the channel was full: the caller got
:class:`~chanlite.layers.ChannelFull`, and the number it took will never arrive). The
receiver's :class:`Gaps` takes the refusals off what it finds missing, so only what Redis
lost (a failover or restart after it acknowledged the entry, a send that raised) or what
expired unread in the inbox is counted. A number heard a second time (an entry a new
master still had although the old one had handed it out) is not delivered again.

A loss at the very end of a sender's messages to a group (or to a process) is revealed
by no later message, so a sender follows each burst of sends there with one *trailing
marker* (:mod:`chanlite_redis.trailing`): a header with its last number and no payload,
published on the group's topic (or queued in the process's inbox) once it has not sent
there for a moment, and again after a failover. A receiver takes a marker as that number
without a message (:meth:`Gaps.marked`): the numbers up to it it never heard are counted
as lost after the grace period; a marker is never delivered.

A sender's messages that reach a process just after the first one it heard from that
sender, with lower numbers (concurrent sends overtaking each other), are delivered if they
come within the grace period, once each. What this cannot see: messages of a sender whose
first message (or marker) this process heard came after them and that never arrive
(nothing to compare with); and a tail whose every marker was lost
too (see :mod:`chanlite_redis.trailing` for when it is sent again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Width of the hexadecimal sequence number after the sender's id in a published message.
WIDTH = 8
#: Senders tracked per group; past it the longest-tracked is forgotten.
MAX_SENDERS = 4096
#: Groups numbered by one process; past it the oldest counter starts again at 1.
MAX_GROUPS = 65536
#: A jump larger than this is counted as lost at once rather than number by number.
MAX_MISSING = 10_000


class Numbering:
    """The sending side: the next sequence number of each group this process sends to."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def take(self, group: str) -> bytes:
        """The next number for *group*, as the fixed-width field that goes on the wire."""
        n = self._next.get(group, 0) + 1
        if n >= 16**WIDTH:
            n = 1
        elif n == 1 and len(self._next) >= MAX_GROUPS:
            # Receivers take a 1 from a sender they already track as a fresh start.
            del self._next[next(iter(self._next))]
        self._next[group] = n
        return b"%08x" % n

    def last(self, group: str) -> bytes | None:
        """The number *group*'s last message took (the wire field), None if none yet."""
        n = self._next.get(group)
        return None if n is None else b"%08x" % n


#: ``\1``, the sender's id (12 bytes), its number and its refusals (hexadecimal).
DIRECT_MARK = b"\1"
DIRECT_HEADER = 1 + 12 + 2 * WIDTH
_WRAP = 16**WIDTH


class DirectNumbering:
    """The sending side of direct messages: a number per receiving process, and the
    count of sends that process's inbox refused (see the module)."""

    __slots__ = ("_numbers", "_refused", "_sender")

    def __init__(self, sender: bytes) -> None:
        self._sender = sender
        self._numbers = Numbering()
        self._refused: dict[str, int] = {}

    def take(self, owner: str) -> bytes:
        """The header of the next message to process *owner*, to go before the payload."""
        number = self._numbers.take(owner)
        if number == b"%08x" % 1:
            self._refused.pop(owner, None)  # numbering starts again: so do the refusals
        refused = self._refused.get(owner, 0)
        return DIRECT_MARK + self._sender + number + b"%08x" % refused

    def last(self, owner: str) -> bytes | None:
        """The header of a trailing marker to process *owner*: the last number taken for
        it and the refusals so far, with no payload to follow; None if none was taken."""
        number = self._numbers.last(owner)
        if number is None:
            return None
        return DIRECT_MARK + self._sender + number + b"%08x" % self._refused.get(owner, 0)

    def refused(self, owner: str) -> None:
        """The inbox of *owner* refused the message just numbered (its channel was full)."""
        if owner not in self._refused and len(self._refused) >= MAX_GROUPS:
            del self._refused[next(iter(self._refused))]
        self._refused[owner] = (self._refused.get(owner, 0) + 1) % _WRAP


def read_direct(payload: bytes | memoryview) -> tuple[bytes, bytes, int] | None:
    """(sender, number field, refusals) from a direct message's header, or None."""
    if len(payload) < DIRECT_HEADER or payload[:1] != DIRECT_MARK:
        return None
    try:
        refused = int(bytes(payload[1 + 12 + WIDTH : DIRECT_HEADER]), 16)
    except ValueError:
        return None
    return bytes(payload[1:13]), bytes(payload[13 : 13 + WIDTH]), refused


@dataclass
class _Track:
    expect: int
    refused: int = 0  # the sender's count of refused sends, as last heard
    missing: dict[int, float] = field(default_factory=dict)  # number -> when found missing
    first: int = 0  # the first number heard from the sender
    since: float = 0.0  # when (monotonic)
    early: set[int] | None = None  # numbers below *first* heard since, within the grace


OnLost = Callable[[str, int], None]


class Gaps:
    """The receiving side: what each sender's numbering says this process missed."""

    def __init__(self, grace: float, on_lost: OnLost) -> None:
        self._grace = grace
        self._on_lost = on_lost
        self._tracks: dict[str, dict[bytes, _Track]] = {}
        self._pending = 0  # numbers missing (not yet counted as lost), all groups
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def heard(self, group: str, sender: bytes, field_: bytes, refused: int = 0) -> bool:
        """Note message number *field_* (the wire field) from *sender* in *group*.

        *refused* is the sender's count of refused sends (direct messages only). Returns
        False for a number heard before (or already counted as lost): not to deliver.
        """
        try:
            number = int(field_, 16)
        except ValueError:
            return True  # not numbered (a history message): its offset says what was missed
        if number == 0:
            return True
        senders = self._tracks.get(group)
        if senders is None:
            senders = self._tracks[group] = {}
        track = senders.get(sender)
        if track is None:
            if len(senders) >= MAX_SENDERS:
                self._drop(group, senders.pop(next(iter(senders))), count=False)
            senders[sender] = _Track(number + 1, refused, first=number, since=time.monotonic())
            return True
        if number == track.expect:
            track.expect += 1
        elif number > track.expect:
            self._missing(group, track, number)
        elif track.missing.pop(number, None) is not None:
            self._pending -= 1  # late, not lost
        elif number < track.first and time.monotonic() - track.since <= self._grace:
            # Sent before the first number heard from this sender, and overtaken by it
            # (concurrent sends of one process reach Redis over different connections):
            # not a repeat, unless heard already.
            early = track.early
            if early is None:
                early = track.early = set()
            if number in early or len(early) >= MAX_MISSING:
                return False
            early.add(number)
        elif number == 1:
            # The sender started numbering this group again: what it had not delivered
            # before is not coming any more.
            self._drop(group, track, count=True)
            senders[sender] = _Track(2, refused)
            return True
        else:
            return False
        if refused != track.refused:
            self._refusals(track, refused)
        return True

    def marked(self, group: str, sender: bytes, field_: bytes, refused: int = 0) -> None:
        """Note *sender*'s trailing marker in *group*: its last number there is *field_*.

        Numbers up to it (itself included: a marker carries no message) that this
        process has not heard are missing, and counted as lost unless they come within
        the grace period. A marker from a sender this process does not track yet says
        nothing (nothing to compare with), nor does one it has heard past.
        """
        try:
            number = int(field_, 16)
        except ValueError:
            return
        track = self._tracks.get(group, {}).get(sender)
        if track is None:
            return
        if number >= track.expect:
            self._missing(group, track, number + 1)
            track.expect = number + 1
        if refused != track.refused:
            self._refusals(track, refused)

    def _refusals(self, track: _Track, refused: int) -> None:
        """The sender's inbox refused *refused* - track.refused more sends: numbers that
        will never arrive, and are not lost. Its oldest missing numbers are taken off
        (the refused ones are older than the message that reports them)."""
        new = (refused - track.refused) % _WRAP
        if new > _WRAP // 2:
            return  # an older count, from a message that was overtaken
        track.refused = refused
        for number in sorted(track.missing)[:new]:
            del track.missing[number]
            self._pending -= 1

    def _missing(self, group: str, track: _Track, number: int) -> None:
        gap = number - track.expect
        now = time.monotonic()
        if gap > MAX_MISSING:
            self._on_lost(group, gap - MAX_MISSING)
            track.expect = number - MAX_MISSING
            gap = MAX_MISSING
        for missed in range(track.expect, number):
            track.missing[missed] = now
        self._pending += gap
        track.expect = number + 1
        self._arm()

    def _arm(self) -> None:
        # A timer left on a loop that was closed never fires: the next loop sets its own.
        loop = self._timer_loop
        if self._timer is not None and loop is not None and not loop.is_closed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer_loop = loop
        self._timer = loop.call_later(self._grace, self._settle)

    def _settle(self) -> None:
        """Count as lost what has stayed missing for the grace period."""
        self._timer = None
        cutoff = time.monotonic() - self._grace
        for group, senders in self._tracks.items():
            lost = 0
            for track in senders.values():
                if not track.missing:
                    continue
                old = [n for n, when in track.missing.items() if when <= cutoff]
                for n in old:
                    del track.missing[n]
                lost += len(old)
            if lost:
                self._pending -= lost
                self._on_lost(group, lost)
        if self._pending > 0:
            self._arm()

    def _drop(self, group: str, track: _Track, *, count: bool) -> None:
        self._pending -= len(track.missing)
        if count and track.missing:
            self._on_lost(group, len(track.missing))
        track.missing.clear()

    def forget(self, group: str) -> None:
        """This process left *group*: what it missed there no longer matters to anyone."""
        senders = self._tracks.pop(group, None)
        for track in (senders or {}).values():
            self._drop(group, track, count=False)
