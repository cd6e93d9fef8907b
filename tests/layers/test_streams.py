"""History/presence declarations and the refusals every layer shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from chanlite.layers import (
    BaseLayer,
    HistoryPolicy,
    LayerConfigError,
    NotSupported,
    get_layer,
    parse_history_option,
)
from chanlite.layers.memory import MemoryLayer
from chanlite.layers.streams import HistoryGap, HistoryPolicies, StreamPosition
from chanlite.testing.streams_contract import check_not_supported


class PlainLayer(BaseLayer):
    """A layer that offers neither history nor presence (only the contract's core)."""

    async def send(self, channel: str, message: Any) -> None: ...
    async def receive(self, channel: str) -> Any: ...
    async def receive_local(self) -> tuple[Sequence[str], Any]:
        return (), {}

    async def group_add(self, group: str, channel: str) -> None: ...
    async def group_discard(self, group: str, channel: str) -> None: ...
    async def group_send(self, group: str, message: Any) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


async def test_a_layer_without_the_capabilities_names_itself() -> None:
    await check_not_supported(PlainLayer())


def test_declaring_history_on_such_a_layer_fails_at_construction() -> None:
    with pytest.raises(NotSupported, match="PlainLayer does not support history"):
        PlainLayer(history={"room.*": HistoryPolicy(size=1)})
    with pytest.raises(NotSupported, match="PlainLayer does not support history"):
        PlainLayer.from_url("plain://?history=room.*:5")


def test_not_supported_is_a_not_implemented_error() -> None:
    error = NotSupported(PlainLayer, "presence")
    assert isinstance(error, NotImplementedError)
    assert (error.layer, error.capability) == ("PlainLayer", "presence")


def test_history_url_option() -> None:
    assert parse_history_option("room.*:100:600,news:50") == {
        "room.*": HistoryPolicy(100, 600.0),
        "news": HistoryPolicy(50),
    }
    layer = get_layer("memory://?history=room.*:100:600,news:50&presence_timeout=5")
    assert layer.history_policy("room.x") == HistoryPolicy(100, 600.0)
    assert layer.history_policy("news") == HistoryPolicy(50)
    assert layer.history_policy("newsy") is None
    assert layer.presence_timeout == 5.0


@pytest.mark.parametrize(
    "value, match",
    [
        ("room.*", "PATTERN:SIZE"),
        ("room.*:x", "SIZE must be an integer"),
        ("room.*:0", "at least 1"),
        ("room.*:5:-1", "positive number"),
        ("room.*:5:nan", "positive number"),
        ("room/*:5", "can never match a group name"),
        (":5", "PATTERN:SIZE"),
        ("a:1:2:3", "PATTERN:SIZE"),
    ],
)
def test_bad_history_url_options_name_the_problem(value: str, match: str) -> None:
    with pytest.raises(LayerConfigError, match=match):
        get_layer(f"memory://?history={value}")


@pytest.mark.parametrize("policy", [(0, None), (1.5, None), (True, None), (5, 0), (5, "1")])
def test_bad_policies(policy: tuple[Any, Any]) -> None:
    with pytest.raises(LayerConfigError, match="history"):
        HistoryPolicy(*policy)


def test_a_pattern_that_can_never_match_is_refused() -> None:
    layer = MemoryLayer()
    with pytest.raises(LayerConfigError, match="can never match a group name"):
        layer.keep_history("room *", HistoryPolicy(5))
    with pytest.raises(LayerConfigError, match="non-empty str"):
        layer.keep_history("", HistoryPolicy(5))


def test_bad_presence_timeout() -> None:
    with pytest.raises(LayerConfigError, match="presence_timeout must be positive"):
        MemoryLayer(presence_timeout=0)


def test_policy_lookup_is_cached_and_bounded() -> None:
    policies = HistoryPolicies({"a.*": HistoryPolicy(1)})
    for i in range(HistoryPolicies.CACHE_SIZE + 10):
        policies.lookup(f"b.{i}")
    assert len(policies._cache) <= HistoryPolicies.CACHE_SIZE
    policies.add("b.*", HistoryPolicy(2))  # a new declaration is seen at once
    assert policies.lookup("b.1") == HistoryPolicy(2)
    policies.add("b.*", HistoryPolicy(3))  # the same pattern again replaces its policy
    assert policies.patterns == {"a.*": HistoryPolicy(1), "b.*": HistoryPolicy(3)}


def test_gap_message_says_what_to_do() -> None:
    gap = HistoryGap("room.1", "too_old", StreamPosition(9, "e1"))
    assert str(gap) == (
        "Cannot resume group 'room.1' exactly: messages after that offset are no longer "
        "kept; the stream is at offset 9, epoch 'e1'. Reload from there."
    )


def test_a_pattern_shadowed_by_an_earlier_one_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = MemoryLayer()
    layer.keep_history("room.*", HistoryPolicy(5))
    layer.keep_history("lobby", HistoryPolicy(5))
    assert not caplog.records
    layer.keep_history("room.vip.*", HistoryPolicy(1))
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert "'room.vip.*' never applies" in record.getMessage()
    assert "'room.*', declared before it" in record.getMessage()
    assert layer.history_policy("room.vip.x") == HistoryPolicy(5)  # as the warning says
