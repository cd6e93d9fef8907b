"""What the test client shares between its HTTP, WebSocket and lifespan calls of the app.

A ``Session`` carries the values every call needs (the app, how to surface its errors,
the grace and the timeout, the cookie jar, the calls still running); the ``TestClient``
builds one for each call, so the HTTP and WebSocket pieces never need the client itself.
One ``AppCall`` per run of the app: its task, bounded waits that name what did not happen,
and the single place where the app's exception is raised or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any

from chanlite.exceptions import ClientDisconnected as ClientDisconnected  # re-exported
from chanlite.types import ASGIApp

logger = logging.getLogger("chanlite.testing")

# Messages the app may queue towards the test before its send() waits (backpressure, so a
# tight sending loop cannot starve the event loop or eat memory).
BUFFER_LIMIT = 256


@dataclass(frozen=True, eq=False)
class Session:
    """What one call of the app needs from the test client, as values.

    ``cookies`` and ``calls`` are the client's own jar and set of running calls (shared, so
    a cookie set by one call is sent by the next, and the client's exit finds every call).
    """

    app: ASGIApp
    raise_server_exceptions: bool
    grace: float  # how long an app may run on after its client went away
    timeout: float  # the bound of every wait of this call
    cookies: dict[str, str]
    calls: set[AppCall]

    def store_cookies(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Keep the cookies of the ``set-cookie`` headers among *headers* (expired ones go)."""
        for name, value in headers:
            if name.lower() == b"set-cookie":
                self._store_cookie(value.decode("latin-1"))

    def _store_cookie(self, line: str) -> None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(line)
        except CookieError:
            logger.warning("ignoring a malformed set-cookie header: %r", line)
            return
        for name, morsel in jar.items():
            if _expired(morsel["max-age"], morsel["expires"]):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value


def _expired(max_age: str, expires: str) -> bool:
    if max_age:
        try:
            return int(max_age) <= 0
        except ValueError:
            return False
    if expires:
        try:
            return parsedate_to_datetime(expires).timestamp() <= time.time()
        except (TypeError, ValueError):
            return False
    return False


class AppCall:
    """One running call of the app: its task, a wake-up event for waiters, its error."""

    def __init__(self, session: Session, coro: Awaitable[None], label: str) -> None:
        self.session = session
        self.label = label
        self.timeout = session.timeout
        self.deadline: float | None = None  # one budget for a whole request()
        self.changed = asyncio.Event()
        self.done = False
        self.reported = False
        self.on_done: Callable[[], None] | None = None
        self.task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.task.add_done_callback(self._finished)
        session.calls.add(self)

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
        if self.session.raise_server_exceptions:
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
                await asyncio.wait({self.task}, timeout=self.session.grace)
                if not self.task.done():
                    raise TimeoutError(f"{self.label}: the app ignored cancellation")
        finally:
            if self.task.done():
                self.session.calls.discard(self)
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
