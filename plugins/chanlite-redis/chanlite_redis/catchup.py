"""Filling a history group's live gap after the pub/sub connection was lost.

Pub/sub is at-most-once: messages published while a process's listener was reconnecting
(or while no event loop listened) never reach it. In a history group they are still in
the stream, so the process fills the gap itself: it remembers the last position it heard
per group, and once the listener is back (subscriptions confirmed) reads the history
after it and delivers those messages first, holding the group's newly heard ones until
then, so its members still get every message once and in offset order. When the stream
no longer has them (pruned, or Redis lost it: another epoch) the gap is logged, and the
held messages go out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from chanlite.layers import Event, HistoryGap, LayerError, StreamPosition

logger = logging.getLogger("chanlite.layers.redis")

#: Reads the history of a group after a position (``layer.history``).
Read = Callable[[str, StreamPosition], Awaitable[list[Event]]]
#: Hands one event to the process's current members of a group.
Deliver = Callable[[str, Event], None]


class CatchUp:
    """The last heard position per history group, and the catch-ups under way."""

    __slots__ = ("_deliver", "_held", "_read", "_seen")

    def __init__(self, read: Read, deliver: Deliver) -> None:
        self._read = read
        self._deliver = deliver
        self._seen: dict[str, StreamPosition] = {}
        self._held: dict[str, list[Event]] = {}

    def heard(self, group: str, event: Event) -> bool:
        """Note a history event heard on pub/sub; False if it is held for a catch-up."""
        held = self._held.get(group)
        if held is not None:
            held.append(event)
            return False
        self._seen[group] = StreamPosition(event["offset"], event["epoch"])
        return True

    def pending(self, groups: Iterable[str]) -> list[str]:
        """Start holding *groups* that have a last heard position; returns them."""
        started = []
        for group in groups:
            if group in self._seen and group not in self._held:
                self._held[group] = []
                started.append(group)
        return started

    def forget(self, keep: Iterable[str]) -> None:
        """Forget the positions of groups not in *keep* (no local members any more)."""
        wanted = set(keep)
        for group in [g for g in self._seen if g not in wanted]:
            del self._seen[group]

    async def run(self, group: str, ready: Callable[[], Awaitable[None]]) -> None:
        """Catch *group* up: after *ready* (the subscription is confirmed), deliver what
        was missed, then what was held. The held messages go out whatever happens."""
        since = self._seen[group]
        missed: list[Event] = []
        try:
            await ready()
            missed = await self._read(group, since)
        except HistoryGap as gap:
            logger.warning(
                "Group %r: messages sent while this process was not listening cannot be "
                "delivered (%s)",
                group,
                gap,
            )
        except LayerError as exc:
            logger.warning(
                "Group %r: messages sent while this process was not listening may be "
                "missing (reading them failed: %s)",
                group,
                exc,
            )
        finally:
            held = self._held.pop(group, [])
            last = since
            for event in (*missed, *held):
                offset, epoch = event["offset"], event["epoch"]
                if epoch == last.epoch and offset <= last.offset:
                    continue  # read from the history and heard live both
                self._deliver(group, event)
                last = StreamPosition(offset, epoch)
            self._seen[group] = last
        if missed:
            logger.info(
                "Group %r: delivered %d messages missed while reconnecting", group, len(missed)
            )
