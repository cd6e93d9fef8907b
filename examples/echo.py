"""The smallest chanlite app: a WebSocket echo.

chanlite run examples/echo.py:app
# then, from Python: websockets.connect("ws://127.0.0.1:8000/ws")
"""

from chanlite import App, WebSocket

app = App()


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)
