"""StreamOrder: own history messages at commit, in offset order with the reader's.

The cross-process behaviour (two processes sending to one history group, a member seeing
every offset once and in order) is tested with real processes in test_sqlite_history.py;
these pin each rule of the buffer on its own.
"""

from __future__ import annotations

from chanlite_sqlite.ordering import Entry, StreamOrder


class Recorder:
    def __init__(self) -> None:
        self.order = StreamOrder(self.deliver)
        self.got: list[tuple[str, int]] = []

    def deliver(self, group: str, entries: list[Entry]) -> None:
        self.got += [(entry.epoch, entry.offset) for entry in entries]

    def offsets(self) -> list[int]:
        return [offset for _, offset in self.got]

    def own(self, offset: int, epoch: str = "e1", group: str = "g") -> bool:
        self.order.writing(group)
        return self.order.written(group, _entry(offset, epoch))

    def read(self, offset: int, epoch: str = "e1", group: str = "g") -> None:
        self.order.read(group, _entry(offset, epoch))

    def full_read(self) -> None:
        self.order.caught_up(self.order.mark())


def _entry(offset: int, epoch: str = "e1") -> Entry:
    return Entry(offset, epoch, ("ch",), {"offset": offset}, 0.0)


def test_an_own_message_right_after_the_last_delivered_goes_at_once() -> None:
    r = Recorder()
    r.read(1)
    assert r.own(2) is False  # no reader needed
    assert r.own(3) is False
    assert r.offsets() == [1, 2, 3]


def test_an_own_message_with_an_unknown_predecessor_waits_for_a_full_read() -> None:
    r = Recorder()
    assert r.own(5) is True  # the reader must look first: poke it
    assert r.offsets() == []
    r.read(4)  # another process's earlier message, found by that read
    assert r.offsets() == [4, 5]


def test_a_gap_below_an_own_message_is_final_after_a_read_begun_after_it() -> None:
    r = Recorder()
    mark = r.order.mark()  # a read that began before the message was handed over
    r.own(5)
    r.order.caught_up(mark)
    assert r.offsets() == []  # it may not have seen offsets below 5
    r.full_read()
    assert r.offsets() == [5]  # pruned, or from before this process: never coming


def test_a_read_message_waits_while_an_own_message_is_being_written() -> None:
    r = Recorder()
    r.read(1)
    r.order.writing("g")  # the writer is giving an own message its offset (2)
    r.read(3)  # another process committed 3 right after it
    assert r.offsets() == [1]
    r.order.written("g", _entry(2))
    assert r.offsets() == [1, 2, 3]


def test_a_read_message_next_in_line_does_not_wait_for_a_write() -> None:
    r = Recorder()
    r.read(1)
    r.order.writing("g")
    r.read(2)  # nothing can come between 1 and 2
    assert r.offsets() == [1, 2]
    r.order.written("g", _entry(3))
    assert r.offsets() == [1, 2, 3]


def test_a_failed_write_releases_what_waited_on_it() -> None:
    r = Recorder()
    r.read(1)
    r.order.writing("g")
    r.read(3)
    assert r.offsets() == [1]
    r.order.written("g", None)  # rolled back: it took no offset
    assert r.offsets() == [1, 3]


def test_own_entries_of_one_batch_arrive_in_order_and_wait_for_the_last() -> None:
    r = Recorder()
    r.read(1)
    r.order.writing("g")
    r.order.writing("g")
    r.read(4)
    r.order.written("g", _entry(2))
    assert r.offsets() == [1, 2]  # next in line: needs no wait
    r.order.written("g", _entry(3))
    assert r.offsets() == [1, 2, 3, 4]


def test_groups_are_independent() -> None:
    r = Recorder()
    r.read(1, group="a")
    r.order.writing("a")
    r.read(7, group="b")  # nothing is being written to b
    assert r.offsets() == [1, 7]


def test_a_new_epoch_delivers_the_old_one_first() -> None:
    r = Recorder()
    r.own(5, "old")  # waiting for a read
    r.read(1, "new")  # the group's history was flushed meanwhile
    assert r.got == [("old", 5), ("new", 1)]


def test_reset_delivers_what_waits_and_forgets_the_offsets() -> None:
    r = Recorder()
    r.read(1)
    r.own(3)
    r.order.reset()
    assert r.offsets() == [1, 3]
    assert r.own(4) is True  # the last offset was forgotten: wait for a read again


def test_an_own_message_nobody_here_gets_never_waits_for_the_reader() -> None:
    r = Recorder()
    r.order.writing("g")
    assert r.order.written("g", Entry(4, "e1", (), {}, 0.0)) is False
    assert r.offsets() == []
    assert r.own(5) is True  # the gap it left: the next one with members waits for a read
    r.full_read()
    assert r.offsets() == [5]
