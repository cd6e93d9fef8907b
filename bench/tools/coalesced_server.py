"""chanlite's server with broadcast writes coalesced per loop iteration: an experiment.

    .venv/bin/python bench/tools/coalesced_server.py chanlite_app:app --port 8000 ...

Same arguments as ``chanlite run``. Replaces ``WebSocketConnection.send_frame`` so that a
broadcast frame is queued per connection and every queued frame of a connection goes out
in one ``transport.write`` at the end of the loop iteration, instead of one write (one
``send()`` syscall) per frame. Frame order against ordinary sends is not preserved, which
is fine for the benchmark's subscribers (they only receive broadcasts) and is what a real
implementation would have to add. ``coalesce_experiment.py`` measures what it buys.
"""

from __future__ import annotations

import asyncio
import sys

from chanlite.cli import main
from chanlite.server.ws_connection import WebSocketConnection

_pending: dict[WebSocketConnection, list[bytes]] = {}
_scheduled = False


def _flush() -> None:
    global _scheduled
    _scheduled = False
    items = list(_pending.items())
    _pending.clear()
    for conn, frames in items:
        if conn.is_open:
            conn.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))


def send_frame(self: WebSocketConnection, frame: bytes) -> bool:
    global _scheduled
    if not self.is_open:
        return False
    if self.transport.get_write_buffer_size() > self.state.hard_cap:
        self.drops += 1
        return False
    queued = _pending.get(self)
    if queued is None:
        _pending[self] = [frame]
        if not _scheduled:
            _scheduled = True
            asyncio.get_running_loop().call_soon(_flush)
    else:
        queued.append(frame)
    return True


WebSocketConnection.send_frame = send_frame  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv = ["chanlite", "run", *sys.argv[1:]]
    sys.exit(main())
