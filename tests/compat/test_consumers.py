"""Real Channels consumers with chanlite layers as their ``CHANNEL_LAYERS`` backend.

Each test runs one check of ``project/checks.py`` in its own process, on every layer: the
Channels tutorial's chat consumer (async and sync), a ``JsonWebsocketConsumer``, an
``AsyncHttpConsumer``, ``except channels.exceptions.ChannelFull``, and plain sync code that
calls the layer through ``async_to_sync`` each time (a new event loop per call).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.compat.conftest import PROJECT, LayerSpec

pytestmark = pytest.mark.timeout(90)


def run_check(layer: LayerSpec, name: str) -> None:
    try:
        result = subprocess.run(
            [sys.executable, str(PROJECT / "checks.py"), name],
            cwd=PROJECT, env=layer.env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{name} on {layer.name}: no result within 60 s (a hang, or an event loop that "
            f"never closed):\n{exc.stderr!r}"
        ) from None
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"{name} on {layer.name} failed:\n{result.stdout}\n{result.stderr}"
    )


def test_async_websocket_consumer(layer: LayerSpec) -> None:
    run_check(layer, "async_consumer")


def test_sync_websocket_consumer(layer: LayerSpec) -> None:
    run_check(layer, "sync_consumer")


def test_json_websocket_consumer(layer: LayerSpec) -> None:
    run_check(layer, "json_consumer")


def test_async_http_consumer(layer: LayerSpec) -> None:
    run_check(layer, "http_consumer")


def test_channel_full_is_channels_channel_full(layer: LayerSpec) -> None:
    run_check(layer, "channel_full")


def test_sync_code_with_a_new_loop_per_call(layer: LayerSpec) -> None:
    run_check(layer, "sync_calls")
