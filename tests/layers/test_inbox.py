"""LocalInbox: capacity counted only when a channel can be full, held events, draining."""

from __future__ import annotations

import asyncio
import threading

from chanlite.layers.inbox import LocalInbox, ThreadSafeInbox


def _inbox(capacity: int = 4, **options: object) -> LocalInbox:
    return LocalInbox(expiry=60, capacity_of=lambda _: capacity, min_capacity=capacity, **options)  # type: ignore[arg-type]


async def test_capacity_holds_across_the_switch_to_counting() -> None:
    inbox = _inbox(capacity=4)
    # Short queue: no channel can be full, nothing is counted yet.
    assert inbox.offer(("a", "b"), {"type": "1"}) == []
    assert inbox.offer(("a",), {"type": "2"}) == []
    assert inbox.offer(("a",), {"type": "3"}) == []
    assert inbox.offer(("a", "b"), {"type": "4"}) == []
    assert inbox.offer(("a", "b"), {"type": "5"}) == ["a"]
    assert len(inbox) == 5
    assert await inbox.get() == (("a", "b"), {"type": "1"})
    assert inbox.offer(("a",), {"type": "6"}) == []
    assert inbox.offer(("a",), {"type": "7"}) == ["a"]


async def test_counting_stops_once_drained_and_starts_again() -> None:
    inbox = _inbox(capacity=4)
    for round_ in range(3):
        for n in range(4):
            assert inbox.offer(("a",), {"type": f"{round_}.{n}"}) == []
        assert inbox.offer(("a",), {"type": "over"}) == ["a"]
        for n in range(4):
            assert (await inbox.get())[1]["type"] == f"{round_}.{n}"


async def test_held_events_count_until_released() -> None:
    inbox = _inbox(capacity=2)
    inbox.offer(("a", "b"), {"type": "1"})
    inbox.offer(("a",), {"type": "2"})
    await inbox.get_entry(hold=True)
    await inbox.get_entry(hold=True)
    assert len(inbox) == 0
    assert inbox.offer(("a", "b"), {"type": "3"}) == ["a"]  # a holds 2, b holds 1
    inbox.release("a")
    assert inbox.offer(("a",), {"type": "4"}) == []


async def test_a_group_entry_held_for_many_channels_counts_at_once() -> None:
    inbox = _inbox(capacity=2)
    members = tuple(f"m{i}" for i in range(10))
    inbox.offer(members, {"type": "1"})
    await inbox.get_entry(hold=True)
    inbox.offer(members, {"type": "2"})
    assert inbox.offer(members, {"type": "3"}) == list(members)


async def test_expired_entries_are_skipped_and_acknowledged() -> None:
    now = [100.0]
    acked: list[object] = []
    inbox = LocalInbox(
        expiry=1, capacity_of=lambda _: 10, clock=lambda: now[0], acknowledge=acked.extend
    )
    inbox.offer(("a",), {"type": "old"}, ack=1)
    now[0] += 2
    inbox.offer(("a",), {"type": "new"}, ack=2)
    assert await inbox.get() == (("a",), {"type": "new"})
    assert acked == [1, 2]


async def test_expired_deliveries_and_the_time_taken_entries_waited_are_counted() -> None:
    now = [100.0]
    inbox = LocalInbox(expiry=1, capacity_of=lambda _: 10, clock=lambda: now[0])
    inbox.offer(("a", "b"), {"type": "old"})  # a group message for two local members
    now[0] += 2
    inbox.offer(("a",), {"type": "kept"})
    now[0] += 0.25
    inbox.offer(("a",), {"type": "sent.earlier"}, expires=now[0] + 0.5)  # sent 0.5 s ago
    assert inbox.expired == 2  # one entry, two deliveries lost: found by the next offer
    assert await inbox.get() == (("a",), {"type": "kept"})
    assert await inbox.get() == (("a",), {"type": "sent.earlier"})
    assert inbox.taken == 2
    assert abs(inbox.waited - (0.25 + 0.5)) < 1e-9
    # Expired at the head when a reader looks (counted or not, acknowledged or not).
    inbox.offer(("a",), {"type": "late"})
    inbox.offer(("c",), {"type": "late"}, ack=7)
    now[0] += 5
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert inbox.expired == 4 and not waiting.done()
    inbox.offer(("a",), {"type": "fresh"})
    assert await asyncio.wait_for(waiting, 1) == (("a",), {"type": "fresh"})
    assert inbox.taken == 3 and inbox.expired == 4


async def test_wait_drained_waits_for_the_low_mark() -> None:
    inbox = _inbox(capacity=100)
    for n in range(6):
        inbox.offer(("a",), {"type": str(n)})
    await asyncio.wait_for(inbox.wait_drained(high=10, low=2), 1)  # below high: at once
    waiting = asyncio.ensure_future(inbox.wait_drained(high=5, low=2))
    for _ in range(4):
        await inbox.get()
        await asyncio.sleep(0)
        assert not waiting.done()  # 5, 4, 3, 2 left
    await inbox.get()
    await asyncio.wait_for(waiting, 1)  # 1 left: fewer than 2
    assert len(inbox) == 1


async def test_wait_drained_ends_on_clear_and_leaves_nothing_on_cancel() -> None:
    inbox = _inbox(capacity=100)
    for n in range(3):
        inbox.offer(("a",), {"type": str(n)})
    cancelled = asyncio.ensure_future(inbox.wait_drained(high=2, low=1))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert cancelled.cancelled()
    waiting = asyncio.ensure_future(inbox.wait_drained(high=2, low=1))
    await asyncio.sleep(0)
    inbox.clear()
    await asyncio.wait_for(waiting, 1)


async def test_thread_safe_inbox_takes_offers_from_threads() -> None:
    inbox = ThreadSafeInbox(expiry=60, capacity_of=lambda _: 10_000, min_capacity=10_000)

    def put(name: str) -> None:
        for n in range(2000):
            assert inbox.offer((name,), {"type": "n", "n": n}) == []

    threads = [threading.Thread(target=put, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    got: dict[str, list[int]] = {}
    for _ in range(8000):
        channels, event = await asyncio.wait_for(inbox.get(), 5)
        got.setdefault(channels[0], []).append(event["n"])
    for thread in threads:
        thread.join()
    assert got == {f"t{i}": list(range(2000)) for i in range(4)}


# -- history messages dropped for a full channel ------------------------------------------


def _msg(offset: int, group: str = "g", epoch: str = "e") -> dict[str, object]:
    return {"type": "m", "group": group, "offset": offset, "epoch": epoch}


def _drain(inbox: LocalInbox) -> list[tuple[tuple[str, ...], dict[str, object]]]:
    got = []
    while (entry := inbox._take(False)) is not None:
        got.append((entry[1], entry[2]))
    return got


def test_a_dropped_history_message_leaves_one_widening_notice_in_its_place() -> None:
    inbox = _inbox(capacity=2)
    for offset in range(1, 7):  # room for 1 and 2; 3..6 are dropped for "a"
        inbox.offer(("a",), _msg(offset), missed=True)
    got = _drain(inbox)
    assert [event["offset"] for _, event in got] == [1, 2, 6]
    notice = got[-1][1]
    assert notice == {"type": "history.missed", "group": "g", "epoch": "e", "first": 3, "offset": 6}
    # Taken: a later drop starts a new notice, never widens one already handed out.
    inbox.offer(("a",), _msg(7), missed=True)
    inbox.offer(("a",), _msg(8), missed=True)
    inbox.offer(("a",), _msg(9), missed=True)
    assert [e["offset"] for _, e in _drain(inbox)] == [7, 8, 9]


def test_a_notice_is_not_widened_past_a_later_message_of_its_group() -> None:
    inbox = _inbox(capacity=3)
    for offset in (1, 2, 3):
        inbox.offer(("a", "b"), _msg(offset), missed=True)
    inbox.offer(("a", "b"), _msg(4), missed=True)  # dropped for both: one notice each
    assert inbox._take(False) is not None and inbox._take(False) is not None  # 1, 2 leave
    inbox.offer(("a",), _msg(5), missed=True)  # queued for "a", after its notice
    # "a" is full again: a new notice after 5; "b" has room (notices count against it).
    inbox.offer(("a", "b"), _msg(6), missed=True)
    got = [(channels, e["type"], e["offset"], e.get("first")) for channels, e in _drain(inbox)]
    assert got == [
        (("a", "b"), "m", 3, None),
        (("a",), "history.missed", 4, 4),
        (("b",), "history.missed", 4, 4),
        (("a",), "m", 5, None),
        (("b",), "m", 6, None),
        (("a",), "history.missed", 6, 6),
    ]


def test_only_final_drops_of_history_messages_leave_notices() -> None:
    inbox = _inbox(capacity=1)
    inbox.offer(("a",), _msg(1))
    assert inbox.offer(("a",), _msg(2)) == ["a"]  # not final (the caller retries): nothing
    assert inbox.offer(("a",), {"type": "plain", "n": 1}, missed=True) == ["a"]  # no history
    inbox.offer(("a",), _msg(3, epoch="e2"), missed=True)
    inbox.offer(("a",), _msg(4), missed=True)  # another epoch: a notice of its own
    got = [(e["type"], e["epoch"], e.get("first"), e["offset"]) for _, e in _drain(inbox)]
    assert got == [
        ("m", "e", None, 1),
        ("history.missed", "e2", 3, 3),
        ("history.missed", "e", 4, 4),
    ]


async def test_retry_full_leaves_a_notice_for_what_it_still_drops() -> None:
    inbox = _inbox(capacity=1)
    inbox.offer(("a",), _msg(1))
    assert await inbox.retry_full(["a"], _msg(2)) == ["a"]  # no reader: dropped at once
    assert [e["type"] for _, e in _drain(inbox)] == ["m", "history.missed"]


async def test_a_channels_consumer_skips_notices_and_gets_its_room_back() -> None:
    from chanlite.layers.demux import LocalDemux

    inbox = _inbox(capacity=1)
    demux = LocalDemux(inbox)
    inbox.offer(("a",), _msg(1), missed=True)
    inbox.offer(("a",), _msg(2), missed=True)  # a notice, skipped by receive()
    assert (await demux.receive("a"))["offset"] == 1
    receiving = asyncio.ensure_future(demux.receive("a"))
    while len(inbox):  # the notice is taken, skipped, and its count given back
        await asyncio.sleep(0)
    inbox.offer(("a",), _msg(3), missed=True)
    assert (await asyncio.wait_for(receiving, 1))["offset"] == 3
