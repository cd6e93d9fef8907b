"""The same echo as ``echo_app.py``, written as a chanlite App.

Served by chanlite's built-in server, it runs the paths a chanlite App takes there and a
raw ASGI app does not: ``WebSocket.send_text``/``send_bytes`` writing straight to the
connection, and the App's state machine around ``receive``. The Autobahn suite grades them
the same way (``make compliance`` runs both apps).
"""

from __future__ import annotations

from chanlite import App, WebSocket, WebSocketDisconnect

app = App()


@app.websocket("/")
async def echo(ws: WebSocket) -> None:
    """Send every message back unchanged, text as text and bytes as bytes."""
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                await ws.send_text(text)
            else:
                await ws.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        return  # the peer closed while we were sending (many fuzzing cases do)
