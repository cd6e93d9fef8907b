"""Server-sent events: :class:`EventSourceResponse` and :class:`ServerSentEvent`.

::

    @app.http("/ticks")
    async def ticks(request):
        async def events():
            async with app.subscribe("ticks") as feed:
                async for event in feed:
                    yield ServerSentEvent(event["n"], event="tick", id=str(event["n"]))
        return EventSourceResponse(events(), ping=15)

Each item the iterator yields is a :class:`ServerSentEvent`, a dict of its fields
(``{"data": ..., "event": ..., "id": ..., "retry": ..., "comment": ...}``) or a plain
value for ``data``; ``data`` that is not a str is sent as JSON. While the iterator is
silent for *ping* seconds a ``: ping`` comment goes out, so proxies and browsers keep the
stream open. The response ends when the iterator does or the client leaves (the iterator
is then closed, its ``finally`` blocks run).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from chanlite.encoders import JSONDefault, dumps
from chanlite.responses import StreamingResponse, format_sse

__all__ = ["EventSourceResponse", "ServerSentEvent"]


@dataclass(frozen=True)
class ServerSentEvent:
    """One event: *data* (str as is, anything else as JSON), and the optional ``event``
    name, ``id``, ``retry`` (milliseconds) and ``comment`` lines."""

    data: Any = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def encode(self, json_default: JSONDefault | None = None) -> str:
        """The event's text on the wire, blank line included."""
        data = self.data
        if data is not None and not isinstance(data, str):
            data = dumps(data, json_default)
        return format_sse(
            data, event=self.event, id=self.id, retry=self.retry, comment=self.comment
        )


class EventSourceResponse(StreamingResponse):
    """A ``text/event-stream`` response fed by an async iterator of events, with a
    ``: ping`` comment after every *ping* seconds of silence (None: none)."""

    def __init__(
        self,
        content: AsyncIterable[Any],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        ping: float | None = 15.0,
        json_default: JSONDefault | None = None,
    ) -> None:
        if ping is not None and ping <= 0:
            raise ValueError(f"ping must be positive seconds or None, not {ping!r}")
        self.source = content
        self.ping = ping
        self.json_default = json_default
        super().__init__(self._lines(), status_code, headers, media_type="text/event-stream")

    async def _lines(self) -> AsyncIterator[str]:
        iterator = aiter(self.source)
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(iterator))
                done, _ = await asyncio.wait({pending}, timeout=self.ping)
                if not done:
                    yield ": ping\n\n"  # keep-alive: the next event is still coming
                    continue
                item_future, pending = pending, None
                try:
                    item = item_future.result()
                except StopAsyncIteration:
                    return
                yield self._encode(item)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _encode(self, item: Any) -> str:
        if isinstance(item, ServerSentEvent):
            return item.encode(self.json_default)
        if isinstance(item, Mapping):
            return ServerSentEvent(**item).encode(self.json_default)
        return ServerSentEvent(item).encode(self.json_default)
