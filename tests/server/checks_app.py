"""Apps the start-up check tests serve: a layer URL with a typo, and a chat app."""

from __future__ import annotations

import os
from typing import Any

from chanlite import App, WebSocket

# The layer URL comes from the environment here, as a settings module would hand it over.
app = App(layer=os.environ.get("CHECKS_APP_LAYER", "memory://"))


@app.websocket("/ws")
async def chat(ws: WebSocket) -> None:
    await ws.accept()
    await ws.join("room")
    await ws.send_text("joined")
    async for _ in ws.iter_text():
        pass


@chat.on("chat.message")
async def chat_message(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_text(event["text"])
