"""The chat app of the README's "A complete app", as written there.

Served as a real process by the slow-consumer test (``chanlite run
tests/readme_chat_app.py:app``): its ``on`` handler runs once per member per message,
which is where events wait when a member's client does not read.
"""

from __future__ import annotations

from typing import Any

from chanlite import App, WebSocket

app = App(layer="memory://")


@app.websocket("/ws/chat/{room}")
async def chat(ws: WebSocket, room: str) -> None:
    await ws.accept()
    if not (room.isascii() and room.isalnum() and len(room) <= 40):
        await ws.close(1008, "bad room name")  # client input: refuse it, never crash on it
        return
    await ws.join(f"chat.{room}")
    async for msg in ws.iter_json():
        if isinstance(msg, dict) and isinstance(msg.get("text"), str):
            await ws.group_send(f"chat.{room}", {"type": "chat.message", "text": msg["text"]})


@chat.on("chat.message")
async def chat_message(ws: WebSocket, event: dict[str, Any]) -> None:
    await ws.send_json({"text": event["text"]})
