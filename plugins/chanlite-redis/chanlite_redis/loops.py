"""Which event loop a Redis layer object belongs to, and running commands from any loop.

redis-py's connections belong to the event loop that opened them. A layer object is owned
by the first loop that uses it; when that loop has been closed (``async_to_sync`` makes a
short-lived loop per call, pytest-asyncio one per test) the next loop takes over with
everything the process holds, and opens connections of its own
(:meth:`LoopOwner._adopt`, which the layer defines). A command from any other loop (a
sync caller's private one) goes over a connection of its own, closed afterwards.
Connection trouble comes out as :class:`~chanlite_redis.RedisUnavailable`; a
cancellation that redis-py swallowed or turned into a connection error still ends the
caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chanlite.layers import BaseLayer
from chanlite_redis.cluster import ShardedListener
from chanlite_redis.config import Target, abandon, close_client
from chanlite_redis.errors import layer_error
from chanlite_redis.inbox import Inbox
from chanlite_redis.listener import Listener
from chanlite_redis.tasks import cancels_now, end_abandoned, quiet_if_collected
from chanlite_redis.trailing import Trailing

logger = logging.getLogger("chanlite.layers.redis")

T = TypeVar("T")


class LoopOwner(BaseLayer):
    """The event-loop side of :class:`~chanlite_redis.RedisLayer` (see the module)."""

    # Set up by the layer.
    timeout: float
    _target: Target
    _where: str
    _inbox: Inbox
    _trailing: Trailing
    _home: asyncio.AbstractEventLoop | None
    # Tasks now inside a Redis call on the owning loop: kept until they leave it, so
    # that end_abandoned() finds them if their loop is closed under them.
    _inside: Counter[asyncio.Task[Any]]
    # Per loop: its connections, listener and background tasks.
    _client: Redis | None
    _blocking: Redis | None
    _listener: Listener | ShardedListener | None
    _failing: bool  # the last command failed for want of Redis
    _background: set[asyncio.Task[Any]]

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open *loop*'s connections and take over what the process holds."""
        raise NotImplementedError

    def _is_home(self, loop: asyncio.AbstractEventLoop) -> bool:
        """True if *loop* owns this layer's connections, adopting it if none live does.

        The first event loop to use the layer owns it. When that loop has been closed
        (``async_to_sync`` makes a short-lived loop per call) the next one takes over,
        with every message queued for local channels and every local membership.
        """
        home = self._home
        if home is loop:
            return True
        if home is None or home.is_closed():
            if home is not None:
                logger.debug("%r: previous event loop closed; moving to a new one", self)
                # Its tasks still inside Redis calls end now, not when collected.
                self._inside.clear()
                end_abandoned(home)
                for client in (self._client, self._blocking):
                    abandon(client)
            self._adopt(loop)
            return True
        return False

    @contextlib.contextmanager
    def _in_redis(self) -> Iterator[None]:
        """Around an await inside redis-py: the task is kept (strongly) until it leaves."""
        task = asyncio.current_task()
        if task is not None:
            self._inside[task] += 1
        try:
            yield
        finally:
            if task is not None:
                self._inside[task] -= 1
                if self._inside[task] <= 0:
                    del self._inside[task]

    def _require_home(self, what: str) -> None:
        if not self._is_home(asyncio.get_running_loop()):
            raise RuntimeError(
                f"{what}() on {self!r} must run on the event loop that first used the "
                "layer (it is still open); create one layer per event loop"
            )

    async def _call(self, what: str, run: Callable[[Redis], Awaitable[T]]) -> T:
        """Run one Redis command, turning connection trouble into :class:`RedisUnavailable`.

        On a loop other than the owning one (a sync caller's private loop, say) the
        command goes over a connection of its own, closed afterwards.
        """
        cancels = cancels_now()
        try:
            loop = asyncio.get_running_loop()
            if self._is_home(loop):
                assert self._client is not None
                # A background task left on a loop closed by hand ends quietly when
                # collected (redis-py's cleanup cannot run on a closed loop).
                with quiet_if_collected(loop), self._in_redis():
                    result = await run(self._client)
            else:
                client = self._target.client(timeout=self.timeout, blocking=False)
                try:
                    result = await run(client)
                finally:
                    await close_client(client)
        except (RedisError, OSError) as exc:
            # A cancellation that redis-py turned into a connection error stays one.
            if cancels_now() > cancels:
                raise asyncio.CancelledError from exc
            self._failing = True
            raise layer_error(what, self._where, exc) from exc
        if cancels_now() > cancels:
            raise asyncio.CancelledError  # redis-py consumed it and carried on
        if self._failing:
            # Redis is back (restarted, or another server took over): the listener and
            # the inbox reader stop backing off, so fewer messages wait or go unheard.
            self._failing = False
            if self._listener is not None:
                self._listener.kick()
            self._inbox.kick()
            # Trailing markers sent before may have been lost with the old server.
            self._trailing.again()
        return result

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
