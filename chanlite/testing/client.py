"""An in-process test client for any ASGI 3 application: no sockets, no threads, all async.

::

    async with TestClient(app) as client:            # runs the lifespan startup/shutdown
        response = await client.get("/items/1")
        assert response.json() == {"id": 1}
        async with client.stream("GET", "/events") as response:    # server-sent events
            async for line in response.aiter_lines():
                ...
        async with client.websocket("/ws", subprotocols=["chat"]) as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"

Every wait is bounded by a timeout (5 s unless told otherwise) that names what it waited
for, and every task the client starts for the app has ended when the ``async with`` block
that started it exits.

HTTP lives in ``chanlite.testing.http`` and WebSockets in ``chanlite.testing.websocket``;
every public name is importable from this module too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

from chanlite.exceptions import RAISE_EXCEPTIONS
from chanlite.exceptions import WebSocketDisconnect as WebSocketDisconnect
from chanlite.testing._call import AppCall, ClientDisconnected, Session, logger
from chanlite.testing.http import (
    Content,
    FileInput,
    ResponseHeaders,
    TestResponse,
    _encode_body,
    _HTTPExchange,
    _StreamContext,
)
from chanlite.testing.websocket import WebSocketRejected, WebSocketTestSession
from chanlite.types import ASGIApp, Message, Scope

__all__ = [
    "ClientDisconnected",
    "LifespanError",
    "ResponseHeaders",
    "TestClient",
    "TestResponse",
    "WebSocketRejected",
    "WebSocketTestSession",
]

HeaderInput: TypeAlias = "Mapping[str, str] | Sequence[tuple[str, str]]"
ParamInput: TypeAlias = "Mapping[str, Any] | Sequence[tuple[str, Any]]"

DEFAULT_TIMEOUT = 5.0
# How long an app may keep running after its client went away before it is cancelled.
DISCONNECT_GRACE = 1.0
_ASGI = {"version": "3.0", "spec_version": "2.4"}


class LifespanError(RuntimeError):
    """The app reported ``lifespan.startup.failed`` / ``lifespan.shutdown.failed``."""


_LIFESPAN_REPLIES = {
    "lifespan.startup.complete",
    "lifespan.startup.failed",
    "lifespan.shutdown.complete",
    "lifespan.shutdown.failed",
}
_REDIRECTS = {301, 302, 303, 307, 308}


def _header_items(headers: HeaderInput | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def _merge_headers(base: list[tuple[str, str]], extra: HeaderInput | None) -> list[tuple[str, str]]:
    """*extra* replaces every header of *base* with a name it sets."""
    items = _header_items(extra)
    names = {name.lower() for name, _ in items}
    return [(k, v) for k, v in base if k.lower() not in names] + items


class TestClient:
    """Call any ASGI 3 app in-process: HTTP requests, streamed responses and WebSockets.

    ``async with TestClient(app) as client`` runs the app's lifespan (startup on enter,
    shutdown on exit); an app that raises on the lifespan scope is taken not to support
    it, like uvicorn's ``lifespan="auto"``. The client may also be used without
    ``async with``, in which case no lifespan runs.

    ``raise_server_exceptions``: an exception in the app is raised in the test (after the
    500 / close 1011 a server would have sent); with False the 500 response is returned.
    ``timeout`` bounds every wait for the app (per call, overridable per request).
    Cookies from ``set-cookie`` are kept in ``client.cookies`` and sent on later requests.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: ASGIApp,
        base_url: str = "http://testserver",
        raise_server_exceptions: bool = True,
        client: tuple[str, int] = ("testclient", 50000),
        *,
        root_path: str = "",
        headers: HeaderInput | None = None,
        cookies: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        follow_redirects: bool = False,
    ) -> None:
        self.app = app
        self.base_url = base_url
        self.raise_server_exceptions = raise_server_exceptions
        self.client = (client[0], int(client[1]))
        self.root_path = root_path
        self.headers = _header_items(headers)
        self.cookies: dict[str, str] = dict(cookies or {})
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.lifespan_supported: bool | None = None  # known after entering
        self._state: dict[str, Any] | None = None
        self._calls: set[AppCall] = set()
        self._lifespan: AppCall | None = None
        self._lifespan_inbox: asyncio.Queue[Message] | None = None
        self._lifespan_replies: deque[Message] = deque()

    def _session(self, timeout: float | None = None) -> Session:
        """The values one call of the app needs, taken now (a test may have changed them).

        DISCONNECT_GRACE is read here, on every call, so that tests can shorten it by
        patching ``chanlite.testing.client.DISCONNECT_GRACE``.
        """
        return Session(
            app=self.app,
            raise_server_exceptions=self.raise_server_exceptions,
            grace=DISCONNECT_GRACE,
            timeout=self.timeout if timeout is None else timeout,
            cookies=self.cookies,
            calls=self._calls,
        )

    # -- lifespan ------------------------------------------------------------------------

    async def __aenter__(self) -> TestClient:
        if self._lifespan is not None:
            raise RuntimeError("this TestClient is already running its lifespan")
        state: dict[str, Any] = {}
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        replies = self._lifespan_replies
        replies.clear()
        received: list[bool] = []

        async def receive() -> Message:
            received.append(True)
            return await inbox.get()

        async def send(message: Message) -> None:
            if message.get("type") not in _LIFESPAN_REPLIES:
                raise ValueError(f"lifespan: unexpected ASGI message {message.get('type')!r}")
            replies.append(message)
            call.changed.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = state
        session = self._session()
        call = AppCall(session, session.app(scope, receive, send), "lifespan")
        inbox.put_nowait({"type": "lifespan.startup"})
        try:
            await call.wait_for(
                lambda: bool(replies) or call.done, "the app did not answer lifespan.startup", None
            )
        except BaseException:
            await call.finish(0)
            raise
        if not replies:
            await call.finish(0)
            exc = call.error()
            if not received:  # raised (or returned) on the scope itself: no lifespan support
                logger.debug("ASGI 'lifespan' protocol appears unsupported: %r", exc)
                self.lifespan_supported = False
                return self
            if exc is not None:
                raise exc
            raise LifespanError("lifespan: the app returned without lifespan.startup.complete")
        reply = replies.popleft()
        if reply["type"] != "lifespan.startup.complete":
            await call.finish(DISCONNECT_GRACE)
            if reply["type"] == "lifespan.startup.failed":
                raise LifespanError(f"lifespan startup failed: {reply.get('message', '')}")
            raise LifespanError(f"lifespan: {reply['type']} sent in answer to lifespan.startup")
        self.lifespan_supported = True
        self._lifespan, self._lifespan_inbox, self._state = call, inbox, state
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for call in [c for c in self._calls if c is not self._lifespan]:
                if not call.done:
                    logger.warning("%s: still running as the client closes; cancelling", call.label)
                await call.finish(0)
            if self._lifespan is not None:
                try:
                    await self._shutdown()
                except Exception:
                    if exc is None:
                        raise
                    logger.exception("lifespan shutdown failed while handling %r", exc)
        finally:
            self._lifespan = self._lifespan_inbox = self._state = None

    async def _shutdown(self) -> None:
        call, inbox, replies = self._lifespan, self._lifespan_inbox, self._lifespan_replies
        assert call is not None and inbox is not None
        if call.done:
            await call.finish(0)
            call.report()
            return
        inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            await call.wait_for(
                lambda: bool(replies) or call.done, "the app did not answer lifespan.shutdown", None
            )
        finally:
            await call.finish(DISCONNECT_GRACE if replies else 0)
        if replies and replies[0]["type"] == "lifespan.shutdown.failed":
            raise LifespanError(f"lifespan shutdown failed: {replies[0].get('message', '')}")
        if replies and replies[0]["type"] != "lifespan.shutdown.complete":
            raise LifespanError(f"lifespan: {replies[0]['type']} sent in answer to shutdown")
        exc = call.error()
        if exc is not None:
            raise exc

    # -- requests ------------------------------------------------------------------------

    def _scope(
        self,
        kind: str,
        path: str,
        params: ParamInput | None,
        headers: list[tuple[str, str]],
        cookies: Mapping[str, str] | None,
    ) -> Scope:
        base, target = urlsplit(self.base_url), urlsplit(path)
        scheme = (target.scheme or base.scheme or "http").lower()
        secure = scheme in ("https", "wss")
        netloc = target.netloc or base.netloc
        host = (target.hostname if target.netloc else base.hostname) or "testserver"
        port = (target.port if target.netloc else base.port) or (443 if secure else 80)
        prefix = "" if target.scheme else base.path.rstrip("/")
        raw = quote(prefix + "/" + target.path.lstrip("/"), safe="/%!$&'()*+,;=:@~")
        query = quote(target.query, safe="=&%+;/?:@!$'()*,~")
        if params:
            extra = urlencode(list(params.items()) if isinstance(params, Mapping) else params, True)
            query = f"{query}&{extra}" if query else extra
        sent = [("host", netloc), ("user-agent", "testclient")]
        sent += [("accept", "*/*")] if kind == "http" else []
        sent = _merge_headers(_merge_headers(sent, self.headers), headers)
        jar = {**self.cookies, **(cookies or {})}
        if jar and not any(name.lower() == "cookie" for name, _ in sent):
            sent.append(("cookie", "; ".join(f"{k}={v}" for k, v in jar.items())))
        scope: Scope = {
            "type": kind,
            "asgi": dict(_ASGI),
            "http_version": "1.1",
            "scheme": ("https" if secure else "http") if kind == "http" else "ws" + "s" * secure,
            "path": self.root_path + unquote(raw),
            "raw_path": raw.encode("ascii"),
            "root_path": self.root_path,
            "query_string": query.encode("ascii"),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in sent],
            "client": self.client,
            "server": (host, port),
            "extensions": {},
        }
        if self.raise_server_exceptions:
            # Asks a chanlite App to re-raise a handler's exception after answering 500
            # (or closing 1011), so the test sees it; servers do not offer it.
            scope["extensions"][RAISE_EXCEPTIONS] = {}
        if self._state is not None:
            scope["state"] = dict(self._state)
        return scope

    def _exchange(
        self,
        method: str,
        path: str,
        params: ParamInput | None,
        headers: HeaderInput | None,
        cookies: Mapping[str, str] | None,
        content: Content | None,
        json: Any,
        data: Mapping[str, Any] | None,
        files: Mapping[str, FileInput] | None,
        timeout: float | None,
    ) -> _HTTPExchange:
        method = method.upper()
        body, extra = _encode_body(method, content, json, data, files)
        sent = _merge_headers(extra, headers)
        scope = self._scope("http", path, params, sent, cookies)
        scope["method"] = method
        return _HTTPExchange(self._session(timeout), scope, body)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: ParamInput | None = None,
        headers: HeaderInput | None = None,
        cookies: Mapping[str, str] | None = None,
        content: Content | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, FileInput] | None = None,
        timeout: float | None = None,
        follow_redirects: bool | None = None,
    ) -> TestResponse:
        """Send one request and read the whole response.

        Also waits for the app to return (so work it does after responding has finished),
        all within *timeout* seconds (the client's ``timeout`` by default). ``data`` is sent
        form-urlencoded, or as multipart/form-data together with ``files``. With
        *follow_redirects* (the client's setting by default) 301/302/303/307/308 answers
        are followed, up to 20; the ones followed are in ``response.history``.
        """
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        history: list[TestResponse] = []
        base = urlsplit(self.base_url)
        url = path
        if not urlsplit(path).scheme:
            url = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}/{path.lstrip('/')}"
        while True:
            exchange = self._exchange(
                method, url, params, headers, cookies, content, json, data, files, timeout
            )
            exchange.call.deadline = time.monotonic() + exchange.call.timeout
            try:
                response = await exchange.start()
                await response.aread()
            except BaseException as exc:
                await exchange.close(exc)
                raise
            await exchange.close(None)
            location = response.headers.get("location")
            if not follow or response.status_code not in _REDIRECTS or location is None:
                response.history = history
                return response
            if len(history) == 20:
                raise RuntimeError(f"{method} {path}: more than 20 redirects")
            history.append(response)
            url, params = urljoin(url, location), None
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method.upper() == "POST"
            ):
                method, content, json, data, files = "GET", None, None, None, None

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: ParamInput | None = None,
        headers: HeaderInput | None = None,
        cookies: Mapping[str, str] | None = None,
        content: Content | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, FileInput] | None = None,
        timeout: float | None = None,
    ) -> contextlib.AbstractAsyncContextManager[TestResponse]:
        """``async with client.stream("GET", "/sse") as response`` reads the body as it
        comes (``aiter_bytes/aiter_text/aiter_lines``); leaving the block sends
        ``http.disconnect`` to the app. *timeout* bounds each wait."""
        return _StreamContext(
            lambda: self._exchange(
                method, path, params, headers, cookies, content, json, data, files, timeout
            )
        )

    async def get(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("GET", path, **kwargs)

    async def head(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("HEAD", path, **kwargs)

    async def options(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("OPTIONS", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("DELETE", path, **kwargs)

    def websocket(
        self,
        path: str,
        *,
        subprotocols: Sequence[str] | None = None,
        headers: HeaderInput | None = None,
        params: ParamInput | None = None,
        cookies: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> WebSocketTestSession:
        """``async with client.websocket("/ws") as ws``: the handshake runs on entering
        (raising ``WebSocketRejected`` if the app refuses it), the exit closes with 1000."""
        offered = list(subprotocols or ())
        sent = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", base64.b64encode(os.urandom(16)).decode()),
            ("sec-websocket-version", "13"),
        ]
        if offered:
            sent.append(("sec-websocket-protocol", ", ".join(offered)))
        scope = self._scope("websocket", path, params, _merge_headers(sent, headers), cookies)
        scope["subprotocols"] = offered
        scope["extensions"]["websocket.http.response"] = {}
        return WebSocketTestSession(self._session(timeout), scope, offered)
