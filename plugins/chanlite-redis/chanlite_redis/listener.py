"""The layer's pub/sub connection: subscribe, confirm, reconnect, re-subscribe.

One dedicated connection per layer carries every topic the process listens to (its groups,
the wake topics of plain channels being waited on, the control topic). ``subscribe``
returns only once the server has confirmed the subscription, so a ``group_send`` issued
after ``group_add`` returns is always heard.

When the connection drops, the listener reconnects with exponential backoff and subscribes
again to every topic still wanted. Pub/sub is at-most-once: messages published while the
connection was down are not replayed, and none is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from chanlite_redis.errors import RedisAuthError, RedisUnavailable, auth_problem, layer_error
from chanlite_redis.tasks import (
    cancel_requested,
    cancels_now,
    raise_if_cancelled,
    raise_if_cancelled_since,
    stop,
)

logger = logging.getLogger("chanlite.layers.redis")

OnMessage = Callable[[bytes, bytes], None]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Listener:
    """Keeps one pub/sub connection subscribed to a changing set of topics."""

    MIN_DELAY = 0.05
    MAX_DELAY = 2.0

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        on_message: OnMessage,
        *,
        timeout: float,
        where: str = "",
        always: tuple[str, ...] = (),
        on_reconnect: Callable[[], None] | None = None,
        sharded: bool = False,
        on_trouble: Callable[[], None] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """*always* topics are subscribed with ``SUBSCRIBE`` whatever else is wanted;
        with *sharded* the others are shard channels (``SSUBSCRIBE``, a Redis Cluster
        node). *on_trouble* is told when the connection fails or the server moves a
        shard channel away; *on_close* closes what *connect* draws from."""
        self._connect = connect
        self._sharded = sharded
        self._on_trouble = on_trouble
        self._on_close = on_close
        self._where = where
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._timeout = timeout
        self._always = always
        self._wanted: set[str] = set(always)
        self._sent: set[str] = set()  # SUBSCRIBE written on the current connection
        self._confirmed: set[str] = set()  # ... and answered by the server
        self._batch: set[str] = set()  # subscribed together right after (re)connecting
        self._confirms: dict[str, list[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._down = False  # True once a connection was lost and not yet restored
        self._failures = 0  # connection attempts that failed, ever
        self._changed = asyncio.Event()  # set (and replaced) when connected or failed
        self._kick = asyncio.Event()  # cuts a backoff wait short
        self._task: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None  # why the last attempt failed
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._conn is not None

    def start(self) -> None:
        """Start the connection task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def kick(self) -> None:
        """Redis answers again (a command got through): reconnect now, not after backoff."""
        if self._down:
            self._kick.set()

    def want(self, topics: Iterable[str]) -> None:
        """Listen to *topics* from the next connection on, without waiting for it."""
        self._wanted.update(topics)
        self.start()

    async def subscribe(self, topic: str) -> None:
        """Subscribe to *topic* and wait for the server's confirmation.

        Raises :class:`RedisUnavailable` when Redis cannot be reached within the timeout;
        the topic is then not wanted any more.
        """
        self._wanted.add(topic)
        if topic in self._confirmed:
            return
        self.start()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        cancels = cancels_now()
        try:
            await asyncio.wait_for(self._subscribe(topic, future), self._timeout)
            raise_if_cancelled_since(cancels)  # wait_for may swallow one
        except (asyncio.TimeoutError, RedisError, OSError) as exc:
            self._wanted.discard(topic)
            self._drop_confirm(topic, future)
            if isinstance(exc, RedisUnavailable):
                raise
            reason = str(exc) or "timed out"
            raise RedisUnavailable(f"could not subscribe to {topic!r}: {reason}") from exc
        except BaseException:
            self._drop_confirm(topic, future)
            raise

    async def _subscribe(self, topic: str, future: asyncio.Future[None]) -> None:
        if topic not in self._sent:
            # Not connected: wait for the next attempt (made at once when between retries)
            # and fail as soon as one fails, rather than waiting out the timeout.
            failures = self._failures
            if self._down:
                self._kick.set()
            while self._conn is None and self._failures == failures:
                await self._changed.wait()
            conn = self._conn
            if conn is None:
                raise self._unavailable()
            if topic not in self._sent:
                self._sent.add(topic)
                await conn.send_command(self._verb(topic, "SUBSCRIBE"), topic, check_health=False)
        if topic in self._confirmed:
            return  # confirmed while we waited for the connection
        self._confirms.setdefault(topic, []).append(future)
        await asyncio.shield(future)

    def _verb(self, topic: str, verb: str) -> str:
        """``SUBSCRIBE`` or ``UNSUBSCRIBE``, or their shard forms for a shard channel."""
        return "S" + verb if self._sharded and topic not in self._always else verb

    def forget(self, topic: str) -> None:
        """Stop wanting *topic* without telling the server (it moved to another node)."""
        self._wanted.discard(topic)
        self._sent.discard(topic)
        self._confirmed.discard(topic)

    @property
    def wanted(self) -> set[str]:
        """The topics this listener keeps subscribed (besides the *always* ones)."""
        return self._wanted - set(self._always)

    def _drop_confirm(self, topic: str, future: asyncio.Future[None]) -> None:
        waiting = self._confirms.get(topic)
        if waiting and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._confirms[topic]

    async def unsubscribe(self, topic: str) -> None:
        """Stop listening to *topic* (best effort: an outage unsubscribes anyway)."""
        if topic in self._always:
            return
        self._wanted.discard(topic)
        self._confirmed.discard(topic)
        if topic in self._sent and self._conn is not None:
            self._sent.discard(topic)
            with contextlib.suppress(RedisError, OSError):
                await self._conn.send_command(
                    self._verb(topic, "UNSUBSCRIBE"), topic, check_health=False
                )

    def _unavailable(self) -> RedisUnavailable:
        error = self._last_error
        if error is None:
            return RedisUnavailable(
                f"Redis at {self._where} is unreachable; the layer is reconnecting"
            )
        failure = layer_error("subscribe", self._where, error)
        if isinstance(failure, RedisUnavailable):
            return failure
        return RedisUnavailable(str(failure))

    async def _run(self) -> None:
        delay = self.MIN_DELAY
        ever_connected = False
        # A loop closed by hand with this task still on it: the coroutine is closed when
        # collected, and must then neither await nor log.
        loop = asyncio.get_running_loop()
        while True:
            conn = self._connect()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                # A server that wants a password (or refuses ours) answers the first
                # command with an error: find out before calling ourselves connected.
                await conn.send_command("PING", check_health=False)
                await conn.read_response()
                raise_if_cancelled()
                topics = sorted(self._wanted)
                self._sent = set(topics)
                self._batch = set(topics)
                await self._subscribe_all(conn, topics)
                self._conn = conn
                self._down = False
                self._last_error = None
                self._announce()
                if ever_connected:
                    self.reconnects += 1
                    logger.warning(
                        "Redis pub/sub reconnected; re-subscribed %d topics", len(topics)
                    )
                    if self._on_reconnect is not None:
                        self._on_reconnect()
                ever_connected = True
                delay = self.MIN_DELAY
                while True:
                    try:
                        response = await conn.read_response()
                    except ResponseError as exc:
                        # A shard channel whose slot is served elsewhere (MOVED): the
                        # connection itself is fine.
                        logger.debug("Redis pub/sub refused a subscription: %s", exc)
                        self._trouble()
                        continue
                    raise_if_cancelled()
                    self._handle(response)
            except (RedisError, OSError) as exc:
                # redis-py may turn a cancellation that lands mid-read into an error.
                raise_if_cancelled(exc)
                self._failed(exc, ever_connected)
            except Exception as exc:
                if loop.is_closed():
                    return
                raise_if_cancelled(exc)
                # Whatever went wrong, a fresh connection is the way back.
                logger.exception("Unexpected error on the Redis pub/sub connection")
                self._last_error = exc
            finally:
                self._conn = None
                self._sent.clear()
                self._confirmed.clear()
                if not loop.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
            self._down = True
            self._failures += 1
            self._announce()
            self._kick.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), delay)
            delay = min(delay * 2, self.MAX_DELAY)

    async def _subscribe_all(self, conn: AbstractConnection, topics: list[str]) -> None:
        plain = [t for t in topics if not self._sharded or t in self._always]
        if plain:
            await conn.send_command("SUBSCRIBE", *plain, check_health=False)
        for topic in topics:
            if self._sharded and topic not in self._always:
                # One per command: shard channels of different slots are refused together.
                await conn.send_command("SSUBSCRIBE", topic, check_health=False)

    def _trouble(self) -> None:
        # Not while the task is being stopped: its loop may be ending (asyncio.run
        # cancels the tasks it has, and one started now would never run).
        if self._on_trouble is not None and not cancel_requested():
            self._on_trouble()

    def _failed(self, exc: BaseException, ever_connected: bool) -> None:
        """Log a failed connection (auth problems once, at ERROR) and fail who waits on it."""
        previous, self._last_error = self._last_error, exc
        self._trouble()
        if auth_problem(exc) is not None:
            # Retrying cannot fix credentials: say so once, and fail the subscribes now
            # rather than at their timeout.
            error = self._unavailable()
            if previous is None or auth_problem(previous) is None:
                logger.error("Redis pub/sub: %s", error)
            for waiting in self._confirms.values():
                for future in waiting:
                    if not future.done():
                        future.set_exception(RedisAuthError(str(error)))
            self._confirms.clear()
        elif ever_connected and not self._down:
            logger.warning("Redis pub/sub connection lost (%s); reconnecting", exc)
        else:
            logger.debug("Redis pub/sub connect failed: %s", exc)

    def _announce(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _handle(self, response: Any) -> None:
        if not isinstance(response, list) or len(response) < 3:
            return
        kind = response[0]
        if kind in (b"message", "message", b"smessage", "smessage"):
            try:
                self._on_message(response[1], response[2])
            except Exception:
                logger.exception("Error handling a message from Redis pub/sub")
        elif kind in (b"sunsubscribe", "sunsubscribe"):
            topic = _text(response[1])
            if topic in self._wanted:
                # Not asked for: the server moved the channel's slot to another node.
                self.forget(topic)
                self._wanted.add(topic)  # still wanted; on_trouble routes it anew
                self._trouble()
        elif kind in (b"subscribe", "subscribe", b"ssubscribe", "ssubscribe"):
            topic = _text(response[1])
            if topic in self._sent:
                self._confirmed.add(topic)
            waiting = self._confirms.get(topic)
            if not waiting:
                return
            if topic in self._batch:
                # The first reply after a reconnect answers everyone who waited.
                self._batch.discard(topic)
                done, waiting[:] = list(waiting), []
            else:
                done = [waiting.pop(0)]
            if not waiting:
                del self._confirms[topic]
            for future in done:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        """Stop the task and close the connection."""
        task = self._task
        if task is not None:
            await stop([task], self._timeout)
            self._task = None
        for waiting in self._confirms.values():
            for future in waiting:
                future.cancel()
        self._confirms.clear()
        if self._on_close is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._on_close(), self._timeout)
