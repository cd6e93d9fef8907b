"""The layer contract's shared parts: exceptions Channels code catches, drop logging."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import channels.exceptions
import pytest

from chanlite.layers import base
from chanlite.layers.base import ChannelFull, LayerConfigError, LayerError
from chanlite.layers.memory import MemoryLayer


def test_channel_full_is_channels_channel_full() -> None:
    assert issubclass(ChannelFull, channels.exceptions.ChannelFull)
    assert issubclass(ChannelFull, LayerError)
    with pytest.raises(channels.exceptions.ChannelFull):
        raise ChannelFull("full")


async def test_send_at_capacity_is_caught_as_channels_channel_full() -> None:
    # Channels' test_send_capacity does exactly this.
    layer = MemoryLayer(capacity=1)
    await layer.send("cap", {"type": "one"})
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send("cap", {"type": "two"})


def test_config_error_is_channels_invalid_layer_error() -> None:
    assert issubclass(LayerConfigError, channels.exceptions.InvalidChannelLayerError)
    assert issubclass(LayerConfigError, ValueError)


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_layers_reads_no_django_settings() -> None:
    out = _run(
        """
        import sys
        import chanlite.layers.base
        heavy = [m for m in ("django", "django.conf", "channels.layers") if m in sys.modules]
        print(heavy, "channels.exceptions" in sys.modules)
        """
    )
    assert out == "[] True"


def test_without_channels_the_exceptions_stand_alone() -> None:
    out = _run(
        """
        import sys
        sys.modules["channels"] = None  # as if Channels were not installed
        from chanlite.layers.base import ChannelFull, LayerConfigError
        print([c.__name__ for c in ChannelFull.__mro__], LayerConfigError.__mro__[2].__name__)
        """
    )
    assert out == "['ChannelFull', 'LayerError', 'Exception', 'BaseException', 'object'] ValueError"


# -- drop logging --------------------------------------------------------------------


async def _full_group(capacity: int = 1) -> tuple[MemoryLayer, list[str]]:
    layer = MemoryLayer(capacity=capacity)
    members = [f"member-{i}" for i in range(10)]
    for channel in members:
        await layer.group_add("room", channel)
    for channel in members[:3]:
        await layer.send(channel, {"type": "fill"})
    return layer, members


async def test_one_info_line_per_group_send(caplog: pytest.LogCaptureFixture) -> None:
    layer, _ = await _full_group()
    with caplog.at_level(logging.INFO, logger="chanlite.layers"):
        await layer.group_send("room", {"type": "news"})
    lines = [r for r in caplog.records if r.name == "chanlite.layers"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert "3 of 10 channels over capacity in group 'room'" in lines[0].getMessage()
    assert layer.drops["room"] == 3


async def test_drop_lines_are_rate_limited_and_counters_exact(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer, members = await _full_group()
    clock = [1000.0]
    monkeypatch.setattr(base.time, "monotonic", lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="chanlite.layers"):
        for _ in range(50):
            await layer.group_send("room", {"type": "news"})
            for channel in members[3:]:
                await layer.receive(channel)  # the others keep up
        clock[0] += base.DROP_LOG_INTERVAL
        await layer.group_send("room", {"type": "news"})
    lines = [r.getMessage() for r in caplog.records if r.name == "chanlite.layers"]
    assert len(lines) == 2
    assert "49 similar lines suppressed" in lines[1]
    assert layer.drops["room"] == 3 * 51
    assert layer.dropped == 3 * 51


async def test_drops_in_other_groups_are_logged_apart(caplog: pytest.LogCaptureFixture) -> None:
    layer = MemoryLayer(capacity=1)
    for group in ("a", "b"):
        await layer.group_add(group, "shared")
    await layer.send("shared", {"type": "fill"})
    with caplog.at_level(logging.INFO, logger="chanlite.layers"):
        await layer.group_send("a", {"type": "x"})
        await layer.group_send("b", {"type": "x"})
    lines = [r.getMessage() for r in caplog.records if r.name == "chanlite.layers"]
    assert len(lines) == 2
    assert "1 of 1 channels over capacity in group 'a'" in lines[0]
    assert "group 'b'" in lines[1]
