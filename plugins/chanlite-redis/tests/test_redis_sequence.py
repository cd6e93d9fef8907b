"""Numbering messages so that a receiver counts what it never heard
(:mod:`chanlite_redis.sequence`), without Redis: the wire fields are fed directly."""

from __future__ import annotations

import asyncio

from chanlite_redis.sequence import DirectNumbering, Gaps, read_direct

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
