"""Redis going down under ``chanlite run``: one line when it goes, one when it is back.

Sockets that need the layer meanwhile are closed with 1011 "channel layer unavailable",
each without a traceback: the outage is reported once, not once per connection.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[3]
APP = "plugins/chanlite-redis/tests/servers_app.py:app"


def test_an_outage_is_logged_once_and_its_end_once(own_redis: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chanlite", "run", APP, "--port", "0", "--no-access-log"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "CHANLITE_LAYER": own_redis.url},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = ""
        while not url:
            line = proc.stderr.readline()
            assert line, "chanlite run exited before serving"
            if line.strip().startswith("http://"):
                url = line.strip().replace("http://", "ws://") + "/ws"
        with connect(url) as first:
            first.recv(timeout=10)  # joined: Redis is up
            own_redis.stop()
            for _ in range(5):
                with connect(url) as ws:
                    with pytest.raises(ConnectionClosed) as closed:
                        ws.recv(timeout=20)
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                    1011,
                    "channel layer unavailable",
                )
            own_redis.start()
            deadline = time.monotonic() + 30
            while True:  # the layer reconnects by itself: a join succeeds again
                with connect(url) as ws:
                    try:
                        ws.recv(timeout=10)
                        break
                    except ConnectionClosed:
                        assert time.monotonic() < deadline, "the layer never recovered"
                        time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    down = [line for line in err.splitlines() if " is unavailable: " in line]
    back = [line for line in err.splitlines() if " is available again " in line]
    assert len(down) == 1, err
    assert f" ERROR:  Channel layer {own_redis.url} is unavailable: " in down[0]
    assert "Connections that need it are closed with 1011 until it recovers" in down[0]
    assert len(back) == 1, err
    assert f" WARNING:  Channel layer {own_redis.url} is available again" in back[0]
    assert "Traceback" not in err
