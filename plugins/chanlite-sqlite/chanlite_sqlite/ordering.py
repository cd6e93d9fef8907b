"""Offset order for a history group's messages, whichever thread has them first.

A history group's messages must reach this process's members in offset order: a
resuming client skips what is older than the last offset it saw. Other processes'
messages come from the reader thread, in file order (offset order within a group). This
process's own messages are handed over by the writer at commit, as the very objects that
were sent: reading them back from the file (and decoding them) cost a quarter of the
broadcast throughput of a history group.

At commit an own message is delivered at once when it follows the last offset delivered
here (the common case: one sender, or senders taking turns). Otherwise it waits in a
small per-group buffer, for the one case that decides its place: a lower offset that
another process committed first and the reader has not read yet. The reader settles that
by reading: once a read that began after the message was handed over has caught up with
the file, every lower offset is either delivered or never coming (pruned, or from before
this process started), and the message goes.

The reverse race is closed by a gate: from the statement that gives own messages their
offsets until they are handed over, another process's message to the same group waits
in the buffer too (its offset may be above one the writer is about to hand over).

Thread-safe; :data:`Deliver` runs under the lock, so two threads never interleave one
group's deliveries. Pure bookkeeping: no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Groups whose last offset is remembered; past it they are forgotten (their next own
#: message waits for a read, which is correct, only slower).
MAX_GROUPS = 65536


@dataclass(slots=True)
class Entry:
    """One history message for this process's members (none: it only takes its place)."""

    offset: int
    epoch: str
    channels: tuple[str, ...]
    message: dict[str, Any]
    expires: float
    ticket: int = 0  # an own message: when it was handed over; 0: read from the file


#: Called with a group and its entries, in offset order.
Deliver = Callable[[str, list[Entry]], None]


class StreamOrder:
    """Per-group buffer putting own and read history messages in offset order."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, int]] = {}  # group -> (epoch, offset) delivered
        self._waiting: dict[str, list[Entry]] = {}  # group -> entries, in offset order
        self._writing: dict[str, int] = {}  # group -> own messages not handed over yet
        self._tickets = 0  # own entries handed over so far
        self._read_past = 0  # every own entry up to this ticket has had a full read

    def writing(self, group: str) -> None:
        """The writer is about to give an own message to *group* its offset."""
        with self._lock:
            self._writing[group] = self._writing.get(group, 0) + 1

    def written(self, group: str, entry: Entry | None) -> bool:
        """The message announced by :meth:`writing` is committed (*entry*) or failed
        (None). True if it waits for the reader: poke it."""
        with self._lock:
            count = self._writing.pop(group, 0) - 1
            if count > 0:
                self._writing[group] = count
            if entry is not None:
                self._tickets += 1
                entry.ticket = self._tickets
                if group not in self._waiting and self._next(group, entry):
                    self._delivered(group, entry)  # the common case: next in line
                    self._deliver(group, [entry])
                    return False
                if entry.channels:
                    self._add(group, entry)
                # else: nobody here gets it; left out, it leaves a gap that only makes a
                # later own message wait for a read (never a wrong order), and a sender
                # with no members here never needs its reader.
            self._release(group)
            return group in self._waiting

    def read(self, group: str, entry: Entry) -> None:
        """The reader's message from another process (in file order)."""
        with self._lock:
            if group not in self._waiting and (
                not self._writing.get(group) or self._next(group, entry)
            ):
                self._delivered(group, entry)
                self._deliver(group, [entry])
                return
            self._add(group, entry)
            self._release(group)

    def mark(self) -> int:
        """The reader, before a read: what it will have read past once caught up."""
        with self._lock:
            return self._tickets

    def caught_up(self, mark: int) -> None:
        """The reader caught up with the file in a read begun after :meth:`mark`."""
        with self._lock:
            if mark <= self._read_past:
                return
            self._read_past = mark
            for group in list(self._waiting):
                self._release(group)

    def reset(self) -> None:
        """A new file: deliver what waits, in order, and forget every offset."""
        with self._lock:
            for group, entries in self._waiting.items():
                self._deliver(group, entries)
            self._waiting.clear()
            self._last.clear()

    def _add(self, group: str, entry: Entry) -> None:
        waiting = self._waiting.setdefault(group, [])
        if waiting and waiting[-1].epoch != entry.epoch:
            # A new epoch (the group's history was flushed): what waits is from the
            # old one and goes first, whatever gaps it has.
            self._deliver(group, waiting[:])
            self._delivered(group, waiting[-1])
            waiting.clear()
        index = len(waiting)
        while index and waiting[index - 1].offset > entry.offset:
            index -= 1  # the writer's entries may arrive after higher ones from the file
        waiting.insert(index, entry)

    def _release(self, group: str) -> None:
        # Deliver the head of the group's buffer for as long as nothing can come before it.
        waiting = self._waiting.get(group)
        if waiting is None:
            return
        writing = self._writing.get(group, 0) > 0
        out: list[Entry] = []
        last = self._last.get(group)
        for entry in waiting:
            # A gap below it: an own message being written may fill it; otherwise a gap
            # below a read entry is final (the reader reads in offset order), and below
            # an own entry a full read since it was handed over proves it final.
            gap = last != (entry.epoch, entry.offset - 1)
            if gap and (writing or entry.ticket > self._read_past):
                break
            out.append(entry)
            last = (entry.epoch, entry.offset)
        if not out:
            return
        if len(out) == len(waiting):
            del self._waiting[group]
        else:
            del waiting[: len(out)]
        self._delivered(group, out[-1])
        self._deliver(group, out)

    def _next(self, group: str, entry: Entry) -> bool:
        # Right after the last offset delivered here: nothing can come between.
        return self._last.get(group) == (entry.epoch, entry.offset - 1)

    def _delivered(self, group: str, entry: Entry) -> None:
        last = self._last
        if group not in last and len(last) >= MAX_GROUPS:
            last.clear()
        last[group] = (entry.epoch, entry.offset)
