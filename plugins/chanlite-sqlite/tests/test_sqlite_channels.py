"""Django Channels with ``BACKEND = "chanlite_sqlite.SQLiteLayer"``.

The consumer runs in its own process (``sqlite_channels_app.py``) so its Django settings cannot
clash with other test modules; this process sends to its group from outside, as another
worker or a management command would.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from chanlite_sqlite import SQLiteLayer

pytestmark = pytest.mark.timeout(60)

APP = Path(__file__).with_name("sqlite_channels_app.py")


async def test_channels_consumer_group_broadcast(tmp_path: Path) -> None:
    db = tmp_path / "channels.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        str(db),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"ready\n", line + (await proc.stderr.read() if proc.stderr else b"")
        layer = SQLiteLayer(db)
        try:
            await layer.group_send("chat", {"type": "chat.message", "text": "from another process"})
        finally:
            await layer.close()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert out == b"ok\n"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
