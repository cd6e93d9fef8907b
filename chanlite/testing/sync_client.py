"""A synchronous face on :class:`~chanlite.testing.TestClient`, for plain ``def`` tests.

Starlette's and FastAPI's ``TestClient`` are used from synchronous tests; this one reads
the same way, so their tests port with little more than an import::

    from chanlite.testing import SyncTestClient

    def test_items():
        with SyncTestClient(app) as client:          # runs lifespan startup / shutdown
            assert client.get("/items/3").json() == {"id": 3}
            with client.websocket_connect("/ws/chat/lobby") as ws:
                ws.send_json({"text": "hi"})
                assert ws.receive_json() == {"text": "hi"}

The app runs on an event loop in one background thread that the client owns (started on
``with``, or on the first call, and stopped by ``close()`` or the end of the ``with``
block); every call hands a coroutine of the async client to that loop and waits for its
result, so timeouts, cookies and exceptions behave exactly as with the async client.
Plain pytest runs such tests: no plugin and no ``asyncio_mode`` are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Coroutine, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from chanlite.testing.client import TestClient
from chanlite.testing.http import ResponseHeaders, TestResponse
from chanlite.testing.websocket import WebSocketTestSession
from chanlite.types import ASGIApp, Message

__all__ = ["SyncTestClient", "SyncWebSocketSession"]

T = TypeVar("T")


class _LoopThread:
    """One event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="chanlite-testclient", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, awaitable: Awaitable[T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("SyncTestClient called from its own event loop: use TestClient")

        async def run() -> T:
            return await awaitable

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return future.result()

    def stop(self) -> None:
        async def drain() -> None:
            # Tasks the app left behind (it was told to stop) get cancelled, not abandoned.
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncTestClient:
    """Call an ASGI app from synchronous code; the arguments are :class:`TestClient`'s.

    ``with SyncTestClient(app) as client`` runs the app's lifespan; without ``with`` no
    lifespan runs (as with Starlette's), and :meth:`close` stops the client's thread.
    ``client.get/post/put/patch/delete/head/options/request`` return a
    :class:`~chanlite.testing.TestResponse`; ``client.websocket_connect(path)`` (or
    ``client.websocket(path)``) is a ``with`` block giving a
    :class:`SyncWebSocketSession`. ``client.async_client`` is the :class:`TestClient`
    underneath.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, app: ASGIApp, *args: Any, **kwargs: Any) -> None:
        self.async_client = TestClient(app, *args, **kwargs)
        self._loop: _LoopThread | None = None
        self._entered = False

    @property
    def app(self) -> ASGIApp:
        return self.async_client.app

    @property
    def cookies(self) -> dict[str, str]:
        return self.async_client.cookies

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = _LoopThread()
        return self._loop.call(coro)

    def __enter__(self) -> SyncTestClient:
        self._call(self.async_client.__aenter__())
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._entered:
                self._entered = False
                self._call(self.async_client.__aexit__(exc_type, exc, tb))
        finally:
            self.close()

    def close(self) -> None:
        """Stop the client's event loop thread (the end of a ``with`` block does it)."""
        if self._loop is not None:
            loop, self._loop = self._loop, None
            loop.stop()

    def request(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        """One request, read whole; keyword arguments as :meth:`TestClient.request`."""
        return self._call(self.async_client.request(method, path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("HEAD", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("OPTIONS", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", path, **kwargs)

    @contextlib.contextmanager
    def websocket_connect(self, path: str, **kwargs: Any) -> Iterator[SyncWebSocketSession]:
        """``with client.websocket_connect("/ws") as ws``: the handshake runs on entering
        (``WebSocketRejected`` if the app refuses it); leaving closes with 1000.
        Keyword arguments as :meth:`TestClient.websocket` (``subprotocols``, ``headers``,
        ``params``, ``cookies``, ``timeout``)."""
        session = self.async_client.websocket(path, **kwargs)
        self._call(session.__aenter__())
        try:
            yield SyncWebSocketSession(session, self._call)
        except BaseException as exc:
            self._call(session.__aexit__(type(exc), exc, exc.__traceback__))
            raise
        else:
            self._call(session.__aexit__(None, None, None))

    websocket = websocket_connect


class SyncWebSocketSession:
    """The synchronous methods of a :class:`~chanlite.testing.WebSocketTestSession`."""

    def __init__(self, session: WebSocketTestSession, call: Any) -> None:
        self.session = session
        self._call = call

    @property
    def accepted_subprotocol(self) -> str | None:
        return self.session.accepted_subprotocol

    @property
    def accept_headers(self) -> ResponseHeaders:
        return self.session.accept_headers

    @property
    def close_code(self) -> int | None:
        return self.session.close_code

    @property
    def close_reason(self) -> str | None:
        return self.session.close_reason

    def send_text(self, data: str) -> None:
        self._call(self.session.send_text(data))

    def send_bytes(self, data: bytes) -> None:
        self._call(self.session.send_bytes(data))

    def send_json(self, data: Any, *, binary: bool = False) -> None:
        self._call(self.session.send_json(data, binary=binary))

    def receive(self, timeout: float | None = None) -> Message:
        result: Message = self._call(self.session.receive(timeout))
        return result

    def receive_text(self, timeout: float | None = None) -> str:
        result: str = self._call(self.session.receive_text(timeout))
        return result

    def receive_bytes(self, timeout: float | None = None) -> bytes:
        result: bytes = self._call(self.session.receive_bytes(timeout))
        return result

    def receive_json(self, timeout: float | None = None) -> Any:
        return self._call(self.session.receive_json(timeout))

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._call(self.session.close(code, reason))
