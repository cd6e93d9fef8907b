"""The toolkit's codec: round trips, precise encode errors, and nothing but DecodeError out."""

from __future__ import annotations

import datetime
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanlite.layers import Codec, DecodeError, MsgpackCodec

codec = MsgpackCodec()

# Every value the layer contract carries (tuples come back as lists, so none here).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
events = st.builds(
    lambda kind, rest: {**rest, "type": kind},
    st.text(min_size=1),
    st.dictionaries(st.text(), values, max_size=6),
)


def test_msgpack_codec_is_a_codec() -> None:
    assert isinstance(codec, Codec)


@settings(max_examples=300, deadline=None)
@given(events)
def test_every_supported_event_round_trips(event: dict[str, Any]) -> None:
    payload = codec.encode(event)
    assert codec.decode(payload) == event
    assert codec.decode(memoryview(payload)) == event
    assert codec.encode_copy(event) == (payload, event)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_decode_error(data: bytes) -> None:
    try:
        event = codec.decode(data)
    except DecodeError:
        return
    assert isinstance(event, dict) and isinstance(event["type"], str)


@settings(max_examples=300, deadline=None)
@given(events, st.integers(min_value=0, max_value=50))
def test_truncated_payloads_raise_decode_error(event: dict[str, Any], cut: int) -> None:
    payload = codec.encode(event)
    if cut >= len(payload):
        return
    try:
        codec.decode(payload[: len(payload) - 1 - cut])
    except DecodeError:
        return


@pytest.mark.parametrize(
    "data", [msgpack.packb([1, 2]), msgpack.packb({"no": "type"}), msgpack.packb({"type": 3})]
)
def test_valid_msgpack_that_is_not_an_event(data: bytes) -> None:
    with pytest.raises(DecodeError, match="not a layer event"):
        codec.decode(data)


def test_unencodable_value_is_named() -> None:
    when = datetime.datetime(2026, 1, 1)
    with pytest.raises(TypeError, match=r"message\['data'\]\['when'\] is datetime"):
        codec.encode({"type": "x", "data": {"when": when}})


def test_tuple_key_is_refused_before_anything_is_written() -> None:
    with pytest.raises(TypeError, match=r"the key \(1, 2\)"):
        codec.encode({"type": "x", "d": {(1, 2): "tuple key"}})
