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

What this cannot see: a loss at the very end of a sender's messages to a group, revealed
only by its next message there; and messages of a sender whose first message to the
group this process heard came after them (nothing to compare with).
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


@dataclass
class _Track:
    expect: int
    missing: dict[int, float] = field(default_factory=dict)  # number -> when found missing


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

    def heard(self, group: str, sender: bytes, field_: bytes) -> None:
        """Note message number *field_* (the wire field) from *sender* in *group*."""
        try:
            number = int(field_, 16)
        except ValueError:
            return  # not numbered (a history message): its offset says what was missed
        if number == 0:
            return
        senders = self._tracks.get(group)
        if senders is None:
            senders = self._tracks[group] = {}
        track = senders.get(sender)
        if track is None:
            if len(senders) >= MAX_SENDERS:
                self._drop(group, senders.pop(next(iter(senders))), count=False)
            senders[sender] = _Track(number + 1)
            return
        if number == track.expect:
            track.expect += 1
        elif number > track.expect:
            self._missing(group, track, number)
        elif track.missing.pop(number, None) is not None:
            self._pending -= 1  # late, not lost
        elif number == 1:
            # The sender started numbering this group again: what it had not delivered
            # before is not coming any more.
            self._drop(group, track, count=True)
            senders[sender] = _Track(2)

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
