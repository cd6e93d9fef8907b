"""Drive ASGI apps directly with hand-written receive/send callables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chanlite.types import ASGIApp, Message, Scope


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    query_string: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    root_path: str = "",
    **extra: Any,
) -> Scope:
    """A minimal HTTP scope as a server would build it."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": root_path,
        "query_string": query_string,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(extra)
    return scope


class Receiver:
    """An ASGI ``receive``: body *chunks* as ``http.request`` messages, then (optionally)
    ``http.disconnect``; after that it blocks until ``disconnect()`` is called."""

    def __init__(self, chunks: Iterable[bytes] = (b"",), *, then_disconnect: bool = False) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        items = list(chunks) or [b""]
        for i, chunk in enumerate(items):
            self.queue.put_nowait(
                {"type": "http.request", "body": chunk, "more_body": i < len(items) - 1}
            )
        if then_disconnect:
            self.disconnect()
        self.calls = 0

    @classmethod
    def from_messages(cls, messages: Iterable[Message]) -> Receiver:
        """A receiver that hands out exactly *messages*, then blocks."""
        receiver = cls()
        receiver.queue = asyncio.Queue()
        for message in messages:
            receiver.push(message)
        return receiver

    def push(self, message: Message) -> None:
        self.queue.put_nowait(message)

    def disconnect(self) -> None:
        self.queue.put_nowait({"type": "http.disconnect"})

    async def __call__(self) -> Message:
        self.calls += 1
        return await self.queue.get()


@dataclass
class Result:
    """What an app sent: status, headers, body, and every raw message."""

    messages: list[Message] = field(default_factory=list)

    @property
    def status(self) -> int:
        status: int = self.messages[0]["status"]
        return status

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = self.messages[0]["headers"]
        return headers

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers}

    def header_list(self, name: str) -> list[str]:
        return [v.decode("latin-1") for k, v in self.raw_headers if k == name.encode()]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    async def send(self, message: Message) -> None:
        self.messages.append(message)


async def call(
    app: ASGIApp, scope: Scope | None = None, receive: Receiver | None = None, timeout: float = 5
) -> Result:
    """Run *app* once on *scope* and collect what it sends."""
    result = Result()
    await asyncio.wait_for(
        app(scope or http_scope(), receive or Receiver(), result.send), timeout=timeout
    )
    return result
