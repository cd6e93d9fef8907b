"""The write connection: one ``sqlite3`` connection served by a thread of its own.

The writer awaits its statements from whichever event loop drives it, and a layer used
from successive loops (``async_to_sync`` per call, ``asyncio.run`` per script, a loop per
test) has loops close while a statement is in flight. aiosqlite, used here before, hands
each result back with ``loop.call_soon_threadsafe``: on a closed loop that raises in its
worker thread, which dies with the connection (and whatever write lock it held) inside.

Here a statement always runs to its end, and its result goes back to the loop that asked
only if that loop is still open; the thread and the connection serve the next loop. A
caller cancelled while it waits stops waiting; the statement still runs (a transaction is
left to the writer, which rolls back one it finds open).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_Job = tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]


def resolve(future: asyncio.Future[Any] | None, result: Any = None, error: Any = None) -> None:
    """Complete *future* from any thread; one whose loop has closed is left (nobody waits)."""
    if future is None or future.done():
        return
    loop = future.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _complete(future, result, error)
    elif not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            loop.call_soon_threadsafe(_complete, future, result, error)


def _complete(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Connection:
    """An async face on one ``sqlite3`` connection (autocommit), safe across event loops.

    Make it with :func:`connect`. The methods are the few the writer needs, named as in
    ``sqlite3`` (and aiosqlite): ``execute``, ``executemany``, ``execute_fetchall``.
    """

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self._conn = conn
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        # A daemon: a layer that is never closed (Channels never closes its layers)
        # must not keep the interpreter from exiting.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:  # closed
                return
            future, function, args = job
            try:
                result = function(*args)
            except BaseException as exc:
                resolve(future, error=exc)
            else:
                resolve(future, result)

    def _queue(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._closed:
            raise ValueError("the connection is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, function, args))
        return future

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await self._queue(function, *args)

    def start(self, sql: str, parameters: Sequence[Any] = ()) -> asyncio.Future[None]:
        """Queue one statement; the future says how it ended.

        Unlike a task awaiting :meth:`execute`, the future is not cancelled when the
        loop's tasks are (at ``asyncio.run``'s end): the outcome of a ``COMMIT`` stays
        known to whoever started it.
        """
        return self._queue(_execute, self._conn, sql, parameters)

    async def rollback_open(self) -> None:
        """Roll back the transaction left open, if any.

        Asked in the connection's thread, after every statement queued before: a caller
        cancelled while a ``BEGIN`` was queued would see no transaction from its own.
        """
        await self._run(_rollback_open, self._conn)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """Run one statement."""
        await self._run(self._conn.execute, sql, parameters)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each of *rows*."""
        await self._run(self._conn.executemany, sql, rows)

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Run one query and return all its rows."""
        return await self._run(_fetchall, self._conn, sql, parameters)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close the connection (after the statements queued before) and end its thread."""
        if self._closed:
            return
        try:
            await self._run(self._conn.close)
        except sqlite3.Error:
            pass
        finally:
            self._closed = True
            self._jobs.put(None)

    def close_now(self) -> None:
        """Close from the calling thread at once (rolling back what it held, releasing its
        lock) and end the thread: for a connection given up on (a file that moved)."""
        self._closed = True
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._jobs.put(None)


def _execute(conn: sqlite3.Connection, sql: str, parameters: Sequence[Any]) -> None:
    conn.execute(sql, parameters)


def _rollback_open(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _fetchall(conn: sqlite3.Connection, sql: str, parameters: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, parameters).fetchall()


async def connect(path: str, timeout: float) -> Connection:
    """The write connection to *path*: autocommit, ``synchronous=NORMAL``."""

    def open_() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    # Opening may wait for a lock: not on the event loop.
    conn = await asyncio.to_thread(open_)
    return Connection(conn, name=f"chanlite-sqlite-writer {path}")
