"""The app the layer soak serves with ``chanlite run ... --layer redis://...`` (two
processes): members join the group ``soak``; ``POST /publish`` sends numbered messages
to it (layer events and broadcast frames) and answers which sends failed.

A send the layer refuses (Redis down) raises: the app counts it and logs one WARNING per
batch naming the numbers, so the soak can check that no loss is silent.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from chanlite import App, Request, WebSocket
from chanlite.layers import LayerError

app = App()
logger = logging.getLogger("chanlite.soak")
failed_sends: list[int] = []
refused_joins = 0
PAD = "x" * int(os.environ.get("SOAK_PAD", "2000"))
ORIGIN = os.environ.get("SOAK_ORIGIN", "?")


@app.websocket("/ws/member")
async def member(ws: WebSocket) -> None:
    global refused_joins
    await ws.accept()
    try:
        await ws.join("soak")
    except LayerError as exc:  # Redis is down: say so to the client, do not crash
        refused_joins += 1
        logger.warning("soak: a member could not join (%s)", exc)
        await ws.close(1013, "layer unavailable")
        return
    await ws.send_text("joined")
    async for _ in ws.iter_text():
        pass


@member.on("soak.note")
async def note(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_text(f"e {event['origin']} {event['n']} {event['pad']}")


@app.http("/publish", methods=["POST"])
async def publish(request: Request) -> dict[str, Any]:
    start, count = (int(part) for part in (await request.body()).split())
    failed = []
    last_error: LayerError | None = None
    for n in range(start, start + count):
        try:
            if n % 2:
                await app.broadcast("soak", text=f"b {ORIGIN} {n} {PAD}")
            else:
                event = {"type": "soak.note", "origin": ORIGIN, "n": n, "pad": PAD}
                await app.group_send("soak", event)
        except LayerError as exc:
            failed.append(n)
            last_error = exc
    if failed:
        failed_sends.extend(failed)
        logger.warning(
            "soak: %d of %d messages not sent (%s): %s",
            len(failed),
            count,
            last_error,
            " ".join(map(str, failed)),
        )
    return {"failed": failed}


@app.http("/stats")
async def stats(request: Request) -> dict[str, Any]:
    s = app.stats
    return {
        "pid": os.getpid(),
        "failed_sends": len(failed_sends),
        "refused_joins": refused_joins,
        "slow_consumers": s.slow_consumers,
        "events_undeliverable": s.events_undeliverable,
        "layer_errors": s.layer_errors,
        "layer_drops": app.hub.layer.dropped,
    }
