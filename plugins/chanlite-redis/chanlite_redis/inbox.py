"""Reading one process's inbox: the messages other processes sent to its channels.

Every channel made by ``new_channel()`` names its owner, so a send from anywhere appends
``"<expiry><channel> <payload>"`` to the owner's inbox list and bumps the channel's count
in the owner's counts hash (the send script refuses the push at capacity). The owner
runs one :class:`Inbox` task: one blocking call takes whatever is waiting (``BLMPOP ...
COUNT``, or ``BLPOP`` before Redis 7) and the messages go to the local queue at once; the
counts are brought down by a script pipelined in front of the next blocking call, so it
costs no round trip of its own. While the local queue is long the task stops pulling, so
a slow process leaves messages in Redis, where senders see its channels fill up.

Entries another process queued carry its number for this process
(:mod:`chanlite_redis.sequence`): what Redis lost of them is counted, not silent, and an
entry handed out twice (by a master and then by the replica that replaced it) is
delivered once. An entry with no channel and only a header is a sender's trailing marker
(:mod:`chanlite_redis.trailing`), which reveals a loss at the end of its messages.

The same task's sibling, :meth:`Inbox.beat`, refreshes the process's heartbeat key, which
tells other processes that its channels are still read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT

from chanlite.layers import Codec, LayerError, LocalInbox
from chanlite_redis import scripts, sequence
from chanlite_redis.errors import layer_error
from chanlite_redis.listener import Listener
from chanlite_redis.stream_scripts import Script
from chanlite_redis.tasks import quiet_if_collected, raise_if_cancelled

logger = logging.getLogger("chanlite.layers.redis")

#: How long one blocking read of the inbox waits before looping (seconds).
INBOX_WAIT = 5
#: Most entries taken by one read.
INBOX_BATCH = 256
# Pull from the inbox only while fewer than LOW_WATER entries wait locally, so a slow reader
# leaves messages in Redis, where senders see its channels fill up.
HIGH_WATER = 1024
LOW_WATER = 256

#: The key of :attr:`RedisLayer.lost <chanlite_redis.RedisLayer.lost>` for direct
#: messages to this process's channels (neither a group nor a channel name).
DIRECT = "!inbox"

Call = Callable[[str, Callable[[Redis], Awaitable[Any]]], Awaitable[Any]]


class Inbox:
    """Moves a process's inbox from Redis to its local queue, and keeps it alive."""

    def __init__(
        self,
        *,
        keys: scripts.Keys,
        client_id: str,
        codec: Codec,
        local: LocalInbox,
        gaps: sequence.Gaps,
        where: str = "",
        redis7: bool | None = None,
    ) -> None:
        self._where = where
        self._inbox = keys.inbox(client_id)
        self._counts = keys.counts(client_id)
        self._alive = keys.alive(client_id)
        self._codec = codec
        self._local = local
        self._gaps = gaps
        self._blmpop = redis7  # BLMPOP needs Redis 7; found out on first read if None
        self._loaded = False  # UNCOUNT loaded (the pipelined EVALSHA needs it there)
        # Delivered messages whose counts Redis has yet to bring down.
        self._to_uncount: Counter[str] = Counter()
        self._clock_offset = 0.0  # server clock minus ours, in milliseconds
        self._nap: asyncio.Future[None] | None = None  # the reader's backoff wait

    def __repr__(self) -> str:
        return f"<Inbox {self._inbox}>"

    async def run(self, blocking: Redis, uncount: AsyncScript) -> None:
        """Read until cancelled, riding out connection loss with backoff.

        *blocking* is a connection of the running loop kept for the blocking reads,
        *uncount* the ``UNCOUNT`` script. Counts not yet settled when a loop's reader
        stops are settled by the next loop's.
        """
        delay = Listener.MIN_DELAY
        failing = False
        loop = asyncio.get_running_loop()
        while True:
            await self._local.wait_drained(HIGH_WATER, LOW_WATER)
            try:
                entries = await self._take(blocking, uncount)
            except RuntimeError:
                # Its loop was closed by hand and this coroutine is being collected:
                # redis-py's cleanup cannot run on a closed loop, and nothing is left to do.
                if loop.is_closed():
                    return
                raise
            except (RedisError, OSError, ValueError) as exc:
                # redis-py may turn a cancellation that lands mid-read into an error.
                raise_if_cancelled(exc)
                if not failing:
                    logger.warning("%r: %s; retrying", self, layer_error("read", self._where, exc))
                failing = True
                await self._back_off(delay)
                delay = min(delay * 2, Listener.MAX_DELAY)
                continue
            if failing:
                logger.warning("%r: reconnected", self)
            failing = False
            delay = Listener.MIN_DELAY
            if entries:
                now = self._server_now()
                for entry in entries:
                    channel = self._deliver(entry, now)
                    if channel is not None:
                        self._to_uncount[channel] += 1
            # Delivered first: what was read is in the local queue, which outlives the loop.
            raise_if_cancelled()

    async def _back_off(self, delay: float) -> None:
        # A future of the running loop (this object outlives loops; an Event would not).
        nap = self._nap = asyncio.get_running_loop().create_future()
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(nap, delay)
        finally:
            self._nap = None

    def kick(self) -> None:
        """Redis answers again (a command got through): read now, not after backoff."""
        nap = self._nap
        if nap is not None and not nap.done():
            nap.set_result(None)

    async def _take(self, client: Redis, uncount: AsyncScript) -> list[bytes]:
        """Settle the counts of what was delivered and wait for more, in one round trip."""
        with quiet_if_collected(asyncio.get_running_loop()):
            return await self._take_on(client, uncount)

    async def _take_on(self, client: Redis, uncount: AsyncScript) -> list[bytes]:
        if not self._loaded:
            if self._blmpop is None:
                version = str((await client.info("server")).get("redis_version", "0"))
                self._blmpop = int(version.split(".")[0]) >= 7
            await client.script_load(scripts.UNCOUNT)
            self._loaded = True
        taken, self._to_uncount = self._to_uncount, Counter()
        args: list[EncodableT] = []
        for channel, n in taken.items():
            args += [channel, n]
        try:
            async with client.pipeline(transaction=False) as pipe:
                if taken:
                    pipe.execute_command("EVALSHA", uncount.sha, 1, self._counts, *args)
                if self._blmpop:
                    pipe.blmpop(INBOX_WAIT, 1, self._inbox, direction="LEFT", count=INBOX_BATCH)
                else:
                    pipe.blpop([self._inbox], timeout=INBOX_WAIT)
                results = await pipe.execute(raise_on_error=False)
        except BaseException:
            # Counted again next time: too low a count beats a channel stuck "full".
            self._to_uncount.update(taken)
            raise
        if taken and isinstance(results[0], NoScriptError):
            # Redis restarted and forgot the script (this call loads it again).
            await uncount(keys=[self._counts], args=args, client=client)
        popped: Any = results[-1]
        if isinstance(popped, Exception):
            raise popped
        if not popped:
            return []
        if self._blmpop:
            return [entry for entry in popped[1] if isinstance(entry, bytes)]
        return [popped[1]] if isinstance(popped[1], bytes) else []

    def _deliver(self, entry: bytes, now: float) -> str | None:
        """Queue one entry locally unless expired; returns its channel (None if unreadable).

        Expiry is judged by *now*, the server's clock as estimated here, so it needs no
        round trip of its own.
        """
        space = entry.find(b" ", scripts.STAMP)
        stamp = entry[: scripts.STAMP]
        if space < 0 or not stamp.isdigit():
            logger.error("%r: dropped a malformed entry", self)
            return None
        channel = entry[scripts.STAMP : space].decode(errors="replace")
        payload = memoryview(entry)[space + 1 :]
        numbered = sequence.read_direct(payload)
        if not channel and numbered is not None and len(payload) == sequence.DIRECT_HEADER:
            # A sender's trailing marker (chanlite_redis.trailing): its last number for
            # this process. No channel's count was raised for it.
            self._gaps.marked(DIRECT, *numbered)
            return None
        if numbered is not None:
            payload = payload[sequence.DIRECT_HEADER :]
            # Heard even when expired: it reached the inbox, it was not lost on the way.
            if not self._gaps.heard(DIRECT, *numbered):
                logger.info(
                    "%r: dropped a message for %r delivered before (Redis handed it out "
                    "again after a failover), or counted as lost already",
                    self,
                    channel,
                )
                return channel
        if int(stamp) <= now:
            self._local.expired += 1  # expired in Redis before this process read it
            return channel
        try:
            message = self._codec.decode(payload)
        except ValueError as exc:
            logger.error("Dropped a malformed message for %r: %s", channel, exc)
            return channel
        # Redis enforced the capacity and the sender was told the message is stored.
        self._local.offer((channel,), message, force=True)
        return channel

    def _server_now(self) -> float:
        """The server's clock in milliseconds, from ours and the last measured offset."""
        return time.time() * 1000 + self._clock_offset

    async def beat(self, call: Call, every: float) -> None:
        """Refresh the heartbeat key (TTL three beats) every *every* seconds, forever.

        Also measures the offset of the server's clock from ours, for :meth:`_deliver`.
        """
        ttl = max(1, int(every * 3000))

        script = Script(scripts.BEAT)

        async def beat(client: Redis) -> None:
            before = time.time()
            seconds, micros, expired = await script(client, [self._alive, self._counts], [ttl])
            self._local.expired += int(expired)  # removed by senders' scripts, expired unread
            middle = (before + time.time()) / 2
            self._clock_offset = (int(seconds) + int(micros) / 1e6 - middle) * 1000

        with quiet_if_collected(asyncio.get_running_loop()):
            while True:
                try:
                    await call("heartbeat", beat)
                except LayerError as exc:
                    logger.debug("%r: heartbeat failed: %s", self, exc)
                await asyncio.sleep(every)
