"""ASGI middleware for ``app.add_middleware``: CORS and gzip.

::

    app.add_middleware(CORSMiddleware, allow_origins=["https://example.com"])
    app.add_middleware(GZipMiddleware, minimum_size=500)

:class:`GZipMiddleware` is Starlette's (through the ``asgi-gzip`` package): responses of
at least *minimum_size* bytes to clients that accept gzip are compressed, streamed ones
too, except ``text/event-stream``. :class:`CORSMiddleware` takes Starlette's options;
WebSockets pass through both untouched (a WebSocket's origin is checked by the app).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from asgi_gzip import GZipMiddleware as _GZip  # type: ignore[import-untyped]

from chanlite.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORSMiddleware", "GZipMiddleware"]

_SAFE_HEADERS = {"accept", "accept-language", "content-language", "content-type"}
_ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


class GZipMiddleware(_GZip):  # type: ignore[misc]
    """Compress responses of at least *minimum_size* bytes for clients that accept gzip."""

    def __init__(self, app: ASGIApp, minimum_size: int = 500, compresslevel: int = 9) -> None:
        super().__init__(app, minimum_size=minimum_size, compresslevel=compresslevel)


class CORSMiddleware:
    """Cross-origin resource sharing: answer preflight requests and mark responses.

    *allow_origins* (``["*"]`` for any) and *allow_origin_regex* say which origins may
    read responses; *allow_methods* and *allow_headers* (``["*"]`` for any) what a
    preflight may ask for; *allow_credentials* lets cookies through (the origin is then
    echoed, never ``*``); *expose_headers* are readable by the page; *max_age* is how
    long a browser may cache a preflight answer. A preflight the rules refuse gets 400
    naming what was refused.
    """

    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Sequence[str] = (),
        allow_methods: Sequence[str] = ("GET",),
        allow_headers: Sequence[str] = (),
        allow_credentials: bool = False,
        allow_origin_regex: str | None = None,
        expose_headers: Sequence[str] = (),
        max_age: int = 600,
    ) -> None:
        self.app = app
        self.any_origin = "*" in allow_origins
        self.origins = set(allow_origins)
        self.origin_regex = re.compile(allow_origin_regex) if allow_origin_regex else None
        self.methods = _ALL_METHODS if "*" in allow_methods else tuple(allow_methods)
        self.any_header = "*" in allow_headers
        self.headers = {h.lower() for h in allow_headers} | _SAFE_HEADERS
        self.credentials = allow_credentials
        self.expose = ", ".join(expose_headers)
        self.max_age = max_age

    def allows(self, origin: str) -> bool:
        """Whether *origin* may read responses."""
        if self.any_origin or origin in self.origins:
            return True
        return self.origin_regex is not None and self.origin_regex.fullmatch(origin) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = method = None
        requested_headers = ""
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                method = value.decode("latin-1")
            elif name == b"access-control-request-headers":
                requested_headers = value.decode("latin-1")
        if origin is None:
            await self.app(scope, receive, send)
        elif scope["method"] == "OPTIONS" and method is not None:
            await self._preflight(origin, method, requested_headers, send)
        else:
            await self.app(scope, receive, self._marking(origin, send))

    def _origin_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        echo = self.credentials or not self.any_origin
        headers = [(b"access-control-allow-origin", (origin if echo else "*").encode("latin-1"))]
        if echo:
            headers.append((b"vary", b"Origin"))
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    async def _preflight(self, origin: str, method: str, requested: str, send: Send) -> None:
        refused = []
        if not self.allows(origin):
            refused.append("origin")
        if method.upper() not in self.methods:
            refused.append("method")
        asked = [h.strip().lower() for h in requested.split(",") if h.strip()]
        if not self.any_header and any(h not in self.headers for h in asked):
            refused.append("headers")
        if refused:
            body = f"Disallowed CORS {', '.join(refused)}".encode()
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            await _answer(send, 400, headers, body)
            return
        headers = self._origin_headers(origin)
        allowed = requested if self.any_header else ", ".join(sorted(self.headers))
        headers += [
            (b"access-control-allow-methods", ", ".join(self.methods).encode()),
            (b"access-control-max-age", str(self.max_age).encode()),
        ]
        if allowed:
            headers.append((b"access-control-allow-headers", allowed.encode("latin-1")))
        await _answer(send, 200, headers, b"")

    def _marking(self, origin: str, send: Send) -> Send:
        if not self.allows(origin):
            return send

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if k.lower() != b"access-control-allow-origin"
                ]
                headers += self._origin_headers(origin)
                if self.expose:
                    headers.append((b"access-control-expose-headers", self.expose.encode()))
                message = {**message, "headers": headers}
            await send(message)

        return marked


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
