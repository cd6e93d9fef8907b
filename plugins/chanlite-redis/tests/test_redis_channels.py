"""Django Channels uses the layer as a CHANNEL_LAYERS backend (in a separate process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

APP = Path(__file__).with_name("channels_app.py")


def test_channels_consumer_broadcasts_through_the_layer(redis_server: Any, prefix: str) -> None:
    result = subprocess.run(
        [sys.executable, str(APP), redis_server.url, prefix],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
