"""What the test client shares between its HTTP, WebSocket and lifespan calls of the app.

One ``AppCall`` per run of the app: its task, bounded waits that name what did not happen,
and the single place where the app's exception is raised or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chanlite.testing.client import TestClient

logger = logging.getLogger("chanlite.testing")

# Messages the app may queue towards the test before its send() waits (backpressure, so a
# tight sending loop cannot starve the event loop or eat memory).
BUFFER_LIMIT = 256


class ClientDisconnected(OSError):
    """Raised inside the app by ``send()`` once the test client has gone (ASGI spec 2.4).

    An app that ends with this error is treated as having finished normally.
    """


class AppCall:
    """One running call of the app: its task, a wake-up event for waiters, its error."""

    def __init__(
        self, client: TestClient, coro: Awaitable[None], label: str, timeout: float
    ) -> None:
        self.client = client
        self.label = label
        self.timeout = timeout
        self.deadline: float | None = None  # one budget for a whole request()
        self.changed = asyncio.Event()
        self.done = False
        self.reported = False
        self.on_done: Callable[[], None] | None = None
        self.task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.task.add_done_callback(self._finished)
        client._calls.add(self)

    def _finished(self, _: asyncio.Task[None]) -> None:
        self.done = True
        if self.on_done is not None:
            self.on_done()
        self.changed.set()

    async def wait_for(self, ready: Callable[[], bool], what: str, timeout: float | None) -> None:
        """Wait until ``ready()``; on timeout raise TimeoutError saying *what* did not happen."""
        limit = self.timeout if timeout is None else timeout
        end = time.monotonic() + limit
        if self.deadline is not None:
            end = min(end, self.deadline)
        while not ready():
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: {what} within {limit:g}s")
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def error(self) -> BaseException | None:
        if not self.task.done() or self.task.cancelled():
            return None
        exc = self.task.exception()
        return None if isinstance(exc, ClientDisconnected) else exc

    def report(self, missing: str | None = None) -> None:
        """Surface the app's exception (or a missing message) once: raise it, or log it."""
        exc = self.error()
        if self.reported or (exc is None and missing is None):
            return
        self.reported = True
        if exc is None:
            exc = RuntimeError(f"{self.label}: {missing}")
        if self.client.raise_server_exceptions:
            raise exc
        logger.error("Exception in ASGI application (%s)", self.label, exc_info=exc)

    async def finish(self, grace: float) -> None:
        """Let the app end by itself within *grace* seconds, then cancel it."""
        try:
            if not self.task.done() and grace > 0:
                await asyncio.wait({self.task}, timeout=grace)
            if not self.task.done():
                logger.debug("%s: cancelling the app, still running after %gs", self.label, grace)
                self.task.cancel()
                await asyncio.wait({self.task}, timeout=self.client._disconnect_grace)
                if not self.task.done():
                    raise TimeoutError(f"{self.label}: the app ignored cancellation")
        finally:
            if self.task.done():
                self.client._calls.discard(self)
                self.error()  # marks the exception retrieved


def check_headers(value: Any, label: str) -> list[tuple[bytes, bytes]]:
    try:
        pairs = [(k, v) for k, v in value]
    except (TypeError, ValueError):
        raise TypeError(f"{label}: headers must be an iterable of [name, value] pairs") from None
    for name, val in pairs:
        if not isinstance(name, bytes) or not isinstance(val, bytes):
            raise TypeError(f"{label}: header names and values must be bytes, got {(name, val)!r}")
    return [(k.lower(), v) for k, v in pairs]
