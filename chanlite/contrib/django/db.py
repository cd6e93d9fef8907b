# mypy: disable-error-code="import-untyped"
"""The ORM bridge: run synchronous Django code on a thread pool, never on the event loop.

::

    @db
    def last_messages(room):                 # plain sync ORM code
        return list(Message.objects.filter(room=room)[:50])

    rows = await last_messages("lobby")      # decorator form
    rows = await db(last_messages_fn, "lobby")   # call form
    count = await db(Message.objects.count)      # no arguments

Thread model
    Calls run on a private pool of ``CHANLITE["DB_THREADS"]`` threads. Django connections are
    per thread, so each pool thread holds its own database connection (at most N
    connections per process). ``close_old_connections()`` runs before and after every call,
    as Django does around each request, so ``CONN_MAX_AGE`` and broken connections are
    honoured. The default is one thread when a database is SQLite (one connection: writers
    in this process never contend) and four otherwise. One thread is what Channels' and
    asgiref's *thread-sensitive* mode gives: calls are serialised, but none of them blocks
    the event loop, so sockets that do not touch the database are never delayed.
    Sessions and users for handshakes load on a separate pool of two threads, so a slow
    call here never holds up new connections either.

    An exception raised by the function propagates to the awaiting handler with its
    traceback. Cancelling the awaiting task does not stop a call already running.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, ParamSpec, TypeVar, overload

from chanlite.contrib.django import conf

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_auth_executor: ThreadPoolExecutor | None = None
#: Threads that load sessions and users for handshakes. They are apart from the main pool
#: so a slow ORM call in a handler never holds up other connections' handshakes.
AUTH_THREADS = 2


def executor() -> ThreadPoolExecutor:
    """The bridge's thread pool, sized by ``CHANLITE["DB_THREADS"]`` on first use."""
    global _executor
    pool = _executor
    if pool is None:
        threads = conf.get().db_threads
        with _lock:
            pool = _executor
            if pool is None:
                pool = _executor = ThreadPoolExecutor(threads, thread_name_prefix="chanlite-db")
    return pool


def auth_executor() -> ThreadPoolExecutor:
    """The small pool that loads sessions and users during handshakes."""
    global _auth_executor
    with _lock:
        pool = _auth_executor
        if pool is None:
            pool = _auth_executor = ThreadPoolExecutor(
                AUTH_THREADS, thread_name_prefix="chanlite-auth"
            )
    return pool


def shutdown(wait: bool = False) -> None:
    """Drop the pools (new ones are made on the next call); running calls finish."""
    global _executor, _auth_executor
    with _lock:
        pools = (_executor, _auth_executor)
        _executor = _auth_executor = None
    for pool in pools:
        if pool is not None:
            pool.shutdown(wait=wait)


conf.on_reset(shutdown)


def _call_in_thread(func: Callable[..., R], args: Any, kwargs: Any) -> R:
    from django.db import close_old_connections

    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


async def run_sync(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``func(*args, **kwargs)`` on the bridge's pool and return its result."""
    return await run_in(executor(), func, *args, **kwargs)


async def run_in(
    pool: ThreadPoolExecutor, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Run ``func(*args, **kwargs)`` on *pool*, with ``close_old_connections()`` around it."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, _call_in_thread, func, args, kwargs)
    return await loop.run_in_executor(pool, call)


class DBFunction(Generic[P, R]):
    """A sync function turned into an awaitable one by :func:`db`.

    ``await f(*args)`` runs it on the pool; ``await f`` runs it with no arguments.
    """

    def __init__(self, func: Callable[P, R]) -> None:
        self.func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        return run_sync(self.func, *args, **kwargs)

    def __await__(self) -> Generator[Any, None, R]:
        return run_sync(self.func).__await__()  # type: ignore[call-arg]

    def __repr__(self) -> str:
        return f"db({self.func!r})"


@overload
def db(func: Callable[P, R], /) -> DBFunction[P, R]: ...
@overload
def db(func: Callable[..., R], /, *args: Any, **kwargs: Any) -> Awaitable[R]: ...
def db(func: Callable[..., R], /, *args: Any, **kwargs: Any) -> Awaitable[R]:
    """Run sync ORM code off the event loop: a decorator, or ``await db(func, *args)``.

    With only a function, returns a :class:`DBFunction` (usable as a decorator, or awaited
    directly to call it without arguments); with arguments, returns the awaitable call.
    """
    if not callable(func):
        raise TypeError(f"db() needs a callable, not {type(func).__name__}")
    if args or kwargs:
        return run_sync(func, *args, **kwargs)
    return DBFunction(func)
