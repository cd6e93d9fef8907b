"""Numbering messages so that a receiver counts what it never heard
(:mod:`chanlite_redis.sequence`), without Redis: the wire fields are fed directly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

import pytest
from chanlite_redis.sequence import DIRECT_HEADER, DirectNumbering, Gaps, Numbering, read_direct
from chanlite_redis.trailing import DELAY, Key, Trailing

from chanlite.layers import LayerError

A = b"aaaaaaaaaaaa"


def _field(n: int) -> bytes:
    return b"%08x" % n


async def test_a_number_missing_past_the_grace_is_counted_once() -> None:
    lost: list[tuple[str, int]] = []
    gaps = Gaps(0.05, lambda key, n: lost.append((key, n)))
    assert gaps.heard("g", A, _field(1))
    assert gaps.heard("g", A, _field(4))  # 2 and 3 missing
    assert gaps.heard("g", A, _field(2))  # late, not lost
    await asyncio.sleep(0.15)
    assert lost == [("g", 1)]
    # A number heard again, or one counted as lost already, is not delivered.
    assert not gaps.heard("g", A, _field(2))
    assert not gaps.heard("g", A, _field(3))


async def test_numbers_below_the_first_heard_are_delivered_once_within_the_grace() -> None:
    """Concurrent sends of one process (threads, each on its own loop and connection)
    may reach a receiver out of order before it has heard from that sender at all."""
    lost: list[int] = []
    gaps = Gaps(0.05, lambda key, n: lost.append(n))
    assert gaps.heard("g", A, _field(3))  # the first heard: nothing to compare with
    assert gaps.heard("g", A, _field(4))
    assert gaps.heard("g", A, _field(2))  # sent before 3, overtaken by it
    assert gaps.heard("g", A, _field(1))
    assert not gaps.heard("g", A, _field(2))  # a repeat is not delivered again
    assert gaps.heard("g", A, _field(5))
    await asyncio.sleep(0.15)
    assert lost == []
    # Past the grace, a number below the first heard is an old repeat (1 would be
    # the sender numbering the group again).
    assert not gaps.heard("g", A, _field(2))
    assert lost == []


async def test_refused_sends_are_not_counted_as_lost() -> None:
    lost: list[int] = []
    gaps = Gaps(0.05, lambda key, n: lost.append(n))
    numbering = DirectNumbering(A)
    headers = [numbering.take("owner") for _ in range(3)]  # 1, 2, 3
    numbering.refused("owner")  # 3 did not fit in the inbox
    headers.append(numbering.take("owner"))  # 4 says one was refused
    for header in (headers[0], headers[1], headers[3]):
        fields = read_direct(header + b"payload")
        assert fields is not None and fields[0] == A
        assert gaps.heard("!inbox", *fields)
    # An overtaken message with the older count changes nothing.
    numbering.take("owner")  # 5, lost by Redis
    sixth = read_direct(numbering.take("owner"))
    assert sixth is not None
    assert gaps.heard("!inbox", *sixth)
    await asyncio.sleep(0.15)
    assert lost == [1]  # 5 only


def test_a_payload_without_the_mark_is_not_numbered() -> None:
    assert read_direct(b"\x81\xa4type\xa1m") is None
    assert read_direct(b"\x01short") is None


async def test_a_marker_reveals_numbers_missing_at_the_end() -> None:
    lost: list[int] = []
    gaps = Gaps(0.05, lambda key, n: lost.append(n))
    numbering = Numbering()
    fields = [numbering.take("g") for _ in range(5)]
    assert numbering.last("g") == fields[-1] and numbering.last("other") is None
    gaps.heard("g", A, fields[0])
    gaps.heard("g", A, fields[1])
    # 3, 4 and 5 were lost; nothing follows but the marker, which names 5.
    marker = numbering.last("g")
    assert marker is not None
    gaps.marked("g", A, marker)
    assert gaps.heard("g", A, fields[2])  # late, not lost: delivered
    await asyncio.sleep(0.15)
    assert lost == [2]
    # A marker heard again (a re-send) or one behind what was heard changes nothing.
    gaps.marked("g", A, marker)
    gaps.marked("g", A, fields[1])
    assert gaps.heard("g", A, numbering.take("g"))  # 6 follows on
    await asyncio.sleep(0.15)
    assert lost == [2]


async def test_a_marker_from_an_unknown_sender_says_nothing() -> None:
    lost: list[int] = []
    gaps = Gaps(0.05, lambda key, n: lost.append(n))
    gaps.marked("g", A, _field(7))
    gaps.marked("g", A, b"not-hex!")
    # Its first message heard starts the comparison, as without the marker.
    assert gaps.heard("g", A, _field(3))
    await asyncio.sleep(0.15)
    assert lost == []


async def test_a_direct_marker_carries_the_refusals() -> None:
    lost: list[int] = []
    gaps = Gaps(0.05, lambda key, n: lost.append(n))
    numbering = DirectNumbering(A)
    assert numbering.last("owner") is None
    first = read_direct(numbering.take("owner") + b"payload")
    assert first is not None and gaps.heard("!inbox", *first)
    numbering.take("owner")  # 2: lost by Redis
    numbering.take("owner")  # 3: refused
    numbering.refused("owner")
    header = numbering.last("owner")
    assert header is not None and len(header) == DIRECT_HEADER
    fields = read_direct(header)
    assert fields is not None and fields[1] == _field(3) and fields[2] == 1
    gaps.marked("!inbox", *fields)
    await asyncio.sleep(0.15)
    assert lost == [1]  # 2 only


async def test_markers_go_once_after_a_pause_and_again_until_one_gets_through() -> None:
    sent: list[Key] = []
    failures = [LayerError("down"), LayerError("down")]
    went = asyncio.Event()

    async def send(key: Key) -> None:
        if key == ("d", "p") and failures:
            raise failures.pop()
        sent.append(key)
        went.set()

    tasks: list[asyncio.Task[None]] = []
    trailing = Trailing(send, lambda coro: tasks.append(asyncio.ensure_future(coro)))
    for _ in range(50):
        with trailing.sending(("g", "room")):  # a burst: one marker for it
            pass
    with trailing.sending(("d", "p")):
        pass
    while len(sent) < 2:
        went.clear()
        await asyncio.wait_for(went.wait(), 5)
    assert sorted(sent) == [("d", "p"), ("g", "room")]
    assert not failures and not trailing.pending()
    # A reconnect: the recent markers go again.
    trailing.again()
    while len(sent) < 4:
        went.clear()
        await asyncio.wait_for(went.wait(), 5)
    assert sorted(sent[2:]) == [("d", "p"), ("g", "room")]
    await asyncio.gather(*tasks)


class Markers:
    """A fake marker sender: records each marker, with when it went, as it goes."""

    def __init__(self) -> None:
        self.sent: list[tuple[Key, float]] = []
        self.tasks: list[asyncio.Future[None]] = []
        self._went = asyncio.Event()
        self.trailing = Trailing(self._send, self._spawn)

    async def _send(self, key: Key) -> None:
        self.sent.append((key, time.monotonic()))
        self._went.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    def keys(self) -> list[Key]:
        return [key for key, _ in self.sent]

    async def wait_for(self, count: int) -> None:
        """Until *count* markers in all have gone."""
        async with asyncio.timeout(5):
            while len(self.sent) < count:
                self._went.clear()
                await self._went.wait()

    async def hold(self, key: Key, release: asyncio.Event) -> asyncio.Task[None]:
        """A send to *key* under way until *release* is set (once it has begun)."""
        entered = asyncio.Event()

        async def send() -> None:
            with self.trailing.sending(key):
                entered.set()
                await release.wait()

        task = asyncio.ensure_future(send())
        await entered.wait()
        return task


async def test_a_marker_waits_for_the_send_under_way_it_covers() -> None:
    markers = Markers()
    slow, quick = ("g", "slow"), ("d", "quick")
    release = asyncio.Event()
    held = await markers.hold(slow, release)  # numbered, not in Redis yet
    with markers.trailing.sending(quick):  # numbered and sent, after the slow one began
        pass
    await markers.wait_for(1)
    # The slow key was due before the quick one, but its send is still under way.
    assert markers.keys() == [quick]
    # Nor does a reconnect send it: only the quick one's marker goes again.
    markers.trailing.again()
    await markers.wait_for(2)
    assert markers.keys() == [quick, quick] and markers.trailing.pending()
    # The send is over: the marker goes DELAY later.
    release.set()
    await held
    over = time.monotonic()
    await markers.wait_for(3)
    assert markers.keys() == [quick, quick, slow]
    assert markers.sent[-1][1] - over >= DELAY - 0.01
    assert not markers.trailing.pending()
    await asyncio.gather(*markers.tasks)


async def test_a_send_that_fails_or_is_cancelled_no_longer_holds_its_marker() -> None:
    markers = Markers()
    with pytest.raises(LayerError), markers.trailing.sending(("g", "failed")):
        raise LayerError("down")
    held = await markers.hold(("d", "cancelled"), asyncio.Event())
    held.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await held
    await markers.wait_for(2)
    assert sorted(markers.keys()) == [("d", "cancelled"), ("g", "failed")]
    assert not markers.trailing.pending()
    await asyncio.gather(*markers.tasks)


async def test_flush_waits_for_the_sends_under_way_then_sends_their_markers() -> None:
    markers = Markers()
    key = ("g", "closing")
    release = asyncio.Event()
    held = await markers.hold(key, release)
    flushing = asyncio.ensure_future(markers.trailing.flush(5))
    await asyncio.sleep(0.05)
    assert not flushing.done() and not markers.sent
    release.set()
    await held
    await asyncio.wait_for(flushing, 5)  # at once, not DELAY after the send
    assert markers.keys() == [key]
    # A send still under way when the flush gives up keeps its marker owed, unsent.
    held = await markers.hold(key, release := asyncio.Event())
    await markers.trailing.flush(0.05)
    assert markers.keys() == [key] and markers.trailing.pending()
    release.set()
    await held
    await markers.wait_for(2)
    # Sends begun after the flush are not waited for, nor marked while under way.
    first, later = ("g", "first"), ("g", "later")
    held = await markers.hold(first, release := asyncio.Event())
    flushing = asyncio.ensure_future(markers.trailing.flush(5))
    await asyncio.sleep(0.05)
    still = await markers.hold(later, hold_on := asyncio.Event())
    release.set()
    await held
    await asyncio.wait_for(flushing, 1)
    assert markers.keys() == [key, key, first]
    hold_on.set()
    await still
    await markers.wait_for(4)
    assert markers.keys()[-1] == later
    await asyncio.gather(*markers.tasks)
