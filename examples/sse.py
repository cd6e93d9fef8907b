"""Server-sent events fed by the channel layer.

chanlite run examples/sse.py:app
curl -N http://127.0.0.1:8000/events           # in one terminal
curl -X POST -d 'hello' http://127.0.0.1:8000/publish   # in another
"""

import json
from collections.abc import AsyncIterator

from chanlite import App, Request, StreamingResponse

app = App()


@app.http("/events")
async def events(request: Request) -> StreamingResponse:
    async def stream() -> AsyncIterator[str]:
        async with app.subscribe("news") as subscription:
            yield ": connected\n\n"
            async for event in subscription:
                yield f"data: {json.dumps(event['text'])}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.http("/publish", methods=["POST"])
async def publish(request: Request) -> dict[str, bool]:
    text = (await request.body()).decode()
    await app.group_send("news", {"type": "news.item", "text": text})
    return {"published": True}
