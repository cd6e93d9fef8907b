"""Background tasks that stop when told to, whatever Redis was doing at the time.

redis-py does not always let a cancellation through: one that lands mid-command can come
out as a ``ConnectionError`` (the connection is dropped under the read), and some paths
(a pipeline's teardown) even return normally with the cancellation consumed. A loop that
rides out connection errors by design would then go round again, and ``asyncio.run()``,
which cancels each leftover task once and waits for it, would never return.

So every loop here asks :func:`cancel_requested` after each Redis call and at each error
it survives, and raises :class:`asyncio.CancelledError` if its task was asked to stop;
calls made on a caller's task compare the count of requests before and after
(:func:`raise_if_cancelled_since`), so a request swallowed on the way still ends them.
``Task.cancelling()`` (Python 3.11+) keeps that request even when the exception itself
was swallowed; on 3.10, which lacks it, only :func:`stop` (used by ``close()``) bounds
the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterator
from typing import Any

logger = logging.getLogger("chanlite.layers.redis")


def cancel_requested() -> bool:
    """True if the running task has been asked to stop (and has not taken it back)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # a coroutine closed after its loop (garbage collected)
        return False
    if task is None:
        return False
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return bool(cancelling is not None and cancelling())


def cancels_now() -> int:
    """The running task's count of pending cancel requests (0 on Python 3.10)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return 0
    cancelling = getattr(task, "cancelling", None)
    return int(cancelling()) if cancelling is not None else 0


def raise_if_cancelled(cause: BaseException | None = None) -> None:
    """Raise :class:`asyncio.CancelledError` if the running task was asked to stop."""
    if cancel_requested():
        raise asyncio.CancelledError from cause


def raise_if_cancelled_since(cancels: int) -> None:
    """Raise :class:`asyncio.CancelledError` if the running task was asked to stop since
    :func:`cancels_now` returned *cancels* (and the request was swallowed on the way:
    ``asyncio.wait_for`` on Python < 3.12 drops one that coincides with its result)."""
    if cancels_now() > cancels:
        raise asyncio.CancelledError


async def stop(tasks: Collection[asyncio.Task[Any]], timeout: float) -> None:
    """Cancel *tasks* and wait at most *timeout* seconds for them to finish.

    Each is cancelled again while it is still running (a cancellation can be lost inside
    redis-py on Python 3.10), so this returns within *timeout* whatever they do; one that
    outlives it is logged and left to the loop.
    """
    pending = [task for task in tasks if not task.done()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            logger.warning("%d Redis layer tasks still run after %.1fs", len(pending), timeout)
            break
        await asyncio.wait(pending, timeout=min(left, 0.1))
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it


@contextlib.contextmanager
def quiet_if_collected(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Around the awaits of a task that may be left on a loop someone closed by hand.

    Such a task's coroutine is closed when collected, at any later moment: redis-py's
    cleanup on the way out then needs the closed loop and raises ``RuntimeError``,
    reported as an unraisable exception (in whatever code runs at that moment). The
    coroutine ends as closed instead: nothing is left for it to do.
    """
    try:
        yield
    except RuntimeError:
        if loop.is_closed():
            raise GeneratorExit from None
        raise


def end_abandoned(loop: asyncio.AbstractEventLoop) -> None:
    """End, quietly and now, the tasks the closed *loop* left inside Redis calls.

    A loop closed by hand leaves its tasks suspended wherever they were. Collected
    later, a coroutine inside redis-py runs redis-py's clean-up, which needs the closed
    loop and fails there: an unraisable error reported in whatever code runs at that
    moment (with the cluster client, even a crash). Closed here, while they are still
    reachable (the layer holds the tasks inside its calls, and those hold what redis-py
    started for them), the same failure is caught and ignored.
    """
    for task in asyncio.all_tasks(loop):
        coro = task.get_coro()
        if _in_redis_code(coro):
            with contextlib.suppress(BaseException):
                coro.close()


def _in_redis_code(coro: Any) -> bool:
    """True if coroutine *coro*, or one it awaits, runs redis-py's or this plugin's code."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None)
        name = frame.f_globals.get("__name__", "") if frame is not None else ""
        if name.startswith(("redis.", "chanlite_redis")):
            return True
        coro = getattr(coro, "cr_await", None)
    return False
