"""``redis://``: the channel layer for sites that outgrow one machine.

How a message travels:

* ``group_send`` is one script call: one ``PUBLISH`` on the group's topic, heard by every
  process with a member in the group; each process names all of its local members in ONE
  ``receive_local()`` item, so a broadcast is decoded once and can be encoded once per
  process. Members that are not a process's own channels (Channels-style plain names, or
  channels another process added) are recorded in a hash and get a queued copy in the
  same script call.
* ``send`` to a channel made by ``new_channel()`` in this process never touches Redis.
  To another process's channel it queues the message on the channel's list (capacity and
  expiry enforced atomically) and notes the channel name in that process's inbox, which
  the owner reads with one blocking ``BLPOP``.
* ``send`` to a plain channel queues on its list and publishes a wake-up; ``receive`` on a
  plain channel pops atomically and sleeps on the wake topic when the list is empty.

Connection loss: commands fail at once with :class:`RedisUnavailable`; the pub/sub
listener and the inbox reader reconnect with backoff and re-subscribe every group that
still has local members. Nothing is retried blindly, so nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import msgpack  # type: ignore[import-untyped]
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from chanlite.layers.base import BaseLayer, ChannelFull, LayerConfigError, LayerError, Message
from chanlite.layers.demux import LocalDemux
from chanlite_redis import scripts
from chanlite_redis.codec import Codec
from chanlite_redis.config import Host, describe, make_pool, strip_query, url_from_hosts
from chanlite_redis.errors import RedisUnavailable
from chanlite_redis.listener import Listener
from chanlite_redis.local import LocalQueue

logger = logging.getLogger("chanlite.layers.redis")

T = TypeVar("T")

#: Width of the sender tag in front of a published group message (a client_id).
_SENDER = 12
_NOBODY = "-" * _SENDER

#: How long one BLPOP on the inbox blocks before looping (seconds).
INBOX_WAIT = 5
#: How many further inbox notes one read takes after the first.
INBOX_BATCH = 256
#: A plain channel's wake topic stays subscribed this long after its last receiver left.
WAKE_LINGER = 5.0
#: A plain-channel receiver re-checks its list this often even without a wake-up.
PLAIN_RECHECK = 1.0


def _float(value: str) -> float:
    return float(value)


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    # redis-py can turn a cancellation that lands mid-command into a connection error,
    # which our loops survive by design; so cancel until the task has really finished.
    while True:
        pending = [task for task in tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it


class _Wake:
    """Receivers waiting on one plain channel, woken by its pub/sub topic."""

    __slots__ = ("event", "generation", "users")

    def __init__(self) -> None:
        self.users = 0
        self.generation = 0
        self.event = asyncio.Event()

    def bump(self) -> None:
        self.generation += 1
        self.event.set()
        self.event = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> None:
        if self.generation != seen:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)


class RedisLayer(BaseLayer):
    """A channel layer on a Redis server, shared by every process that points at it.

    Usable from chanlite (``App(layer="redis://host:6379/0")``, ``--layer redis://...``)
    and as a Django Channels ``CHANNEL_LAYERS`` backend
    (``"BACKEND": "chanlite_redis.RedisLayer"``, ``"CONFIG": {"hosts": [...]}``).
    """

    url_options: ClassVar[Mapping[str, Callable[[str], Any]]] = {
        **BaseLayer.url_options,
        "prefix": str,
        "timeout": _float,
        "heartbeat": _float,
        "max_connections": int,
        "ssl_cert_reqs": str,
        "ssl_ca_certs": str,
    }

    def __init__(
        self,
        url: str | None = None,
        *,
        hosts: Sequence[Host] | None = None,
        prefix: str = "chanlite:",
        timeout: float = 3.0,
        heartbeat: float = 10.0,
        max_connections: int = 32,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        ssl_cert_reqs: str | None = None,
        ssl_ca_certs: str | None = None,
        **options: Any,
    ) -> None:
        """Point the layer at one Redis server.

        *url* is ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://`` for TLS;
        *hosts* is the channels_redis spelling of the same (one entry). *timeout* bounds
        connecting, each command and each subscription, so an outage is reported rather
        than waited out. *heartbeat* is how often a receiving process proves it is alive.
        Other options (``capacity``, ``expiry``, ``group_expiry``, ``channel_capacity``)
        are the common layer options.
        """
        super().__init__(**options)
        extra: dict[str, Any] = {}
        if hosts is not None:
            if url is not None:
                raise TypeError("Give either url or hosts, not both")
            url, extra = url_from_hosts(hosts)
        self.url = url or "redis://localhost:6379/0"
        if ssl_cert_reqs is not None:
            extra["ssl_cert_reqs"] = ssl_cert_reqs
        if ssl_ca_certs is not None:
            extra["ssl_ca_certs"] = ssl_ca_certs
        if timeout <= 0 or heartbeat <= 0:
            raise ValueError("timeout and heartbeat must be positive")
        self.prefix = prefix
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.max_connections = max_connections
        self.keys = scripts.Keys(prefix)
        self._extra = extra
        self._codec = Codec(symmetric_encryption_keys)
        self._where = describe(self.url)
        self._sender_tag = self.client_id.encode()
        if len(self._sender_tag) != _SENDER:
            raise LayerConfigError("client_id must be 12 characters")
        self._group_topic_prefix = self.keys.group_topic("")
        self._wake_topic_prefix = self.keys.wake_topic("")
        # Fail on a malformed URL now rather than at the first send.
        make_pool(self.url, timeout=timeout, blocking=False, **extra)
        self._home: asyncio.AbstractEventLoop | None = None
        self._reset_state()

    @classmethod
    def from_url(cls, url: str) -> RedisLayer:
        """Build from ``redis://[:password@]host:port/db?capacity=...&expiry=...``."""
        return cls(strip_query(url), **cls.parse_url_options(url))

    def __repr__(self) -> str:
        return f"<RedisLayer {self._where} prefix={self.prefix!r} client={self.client_id}>"

    # -- event loop ownership ------------------------------------------------------------

    def _reset_state(self) -> None:
        """Fresh per-loop state: connections, the local queue, local memberships."""
        self._client: Redis | None = None
        self._blocking: Redis | None = None
        self._listener: Listener | None = None
        self._local = LocalQueue(self.expiry, self.get_capacity)
        # group -> {local channel: monotonic join time}, in join order.
        self._groups: dict[str, dict[str, float]] = {}
        self._wakes: dict[str, _Wake] = {}
        self._inbox_task: asyncio.Task[None] | None = None
        self._clock_offset = 0.0  # server clock minus ours, in milliseconds
        self._blmpop: bool | None = None  # BLMPOP needs Redis 7; found out on first read
        # Delivered inbox messages whose counts Redis has yet to bring down.
        self._to_uncount: Counter[str] = Counter()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._demux = LocalDemux(self.receive_local)

    def _is_home(self, loop: asyncio.AbstractEventLoop) -> bool:
        """True if *loop* owns this layer's connections, adopting it if none live does.

        The first event loop to use the layer owns it. When that loop has been closed
        (``async_to_sync`` makes a short-lived loop per call) the next one takes over.
        """
        home = self._home
        if home is loop:
            return True
        if home is None or home.is_closed():
            if home is not None:
                logger.debug("%r: previous event loop closed; moving to a new one", self)
            self._reset_state()
            self._home = loop
            pool = make_pool(
                self.url,
                timeout=self.timeout,
                blocking=False,
                max_connections=self.max_connections,
                pool_class=BlockingConnectionPool,
                **self._extra,
            )
            client = self._client = Redis(connection_pool=pool)
            self._send_script = client.register_script(scripts.SEND)
            self._group_send_script = client.register_script(scripts.GROUP_SEND)
            self._group_add_script = client.register_script(scripts.GROUP_ADD)
            self._pop_script = client.register_script(scripts.POP)
            self._push_back_script = client.register_script(scripts.PUSH_BACK)
            self._uncount_script = client.register_script(scripts.UNCOUNT)
            return True
        return False

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
        try:
            if self._is_home(asyncio.get_running_loop()):
                assert self._client is not None
                return await run(self._client)
            pool = make_pool(self.url, timeout=self.timeout, blocking=False, **self._extra)
            client = Redis(connection_pool=pool)
            try:
                return await run(client)
            finally:
                await client.aclose(close_connection_pool=True)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnavailable(
                f"{what}: Redis at {self._where} is unreachable ({exc}); "
                "the layer reconnects by itself, retry later"
            ) from exc
        except RedisError as exc:
            raise LayerError(f"{what}: Redis at {self._where} answered an error: {exc}") from exc

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ms(self, seconds: float) -> int:
        return max(1, int(seconds * 1000))

    # -- direct messages -------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue *message* on *channel*; raise :class:`ChannelFull` at capacity.

        Raises :class:`RedisUnavailable` when Redis cannot be reached.
        """
        self.require_valid_message(message)
        self.require_valid_channel_name(channel)
        if self.is_local(channel) and self._is_home(asyncio.get_running_loop()):
            if not self._local.has_room(channel):
                raise ChannelFull(channel)
            self._local.put((channel,), message)
            return
        args: list[EncodableT] = [
            self.prefix,
            channel,
            self._codec.encode(message),
            self.get_capacity(channel),
            self._ms(self.expiry),
        ]
        stored = await self._call("send", lambda c: self._send_script(args=args, client=c))
        if not stored:
            raise ChannelFull(channel)

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on *channel* (local ones through ``receive_local``)."""
        self.require_valid_channel_name(channel, receive=True)
        self._require_home("receive")
        if self.is_local(channel):
            return await self._demux.receive(channel)
        return await self._receive_plain(channel)

    async def _receive_plain(self, channel: str) -> Message:
        key = self.keys.channel(channel)
        topic = self.keys.wake_topic(channel)
        wake = self._wakes.get(channel)
        if wake is None:
            wake = self._wakes[channel] = _Wake()
        wake.users += 1
        try:
            # Subscribed before looking, so a send after an empty look always wakes us.
            await self._ensure_listener().subscribe(topic)
            while True:
                seen = wake.generation
                entry = await self._pop_plain(key)
                if entry is not None:
                    try:
                        return self._codec.decode(memoryview(entry)[scripts.STAMP :])
                    except ValueError as exc:
                        logger.error("Dropped a malformed message on %r: %s", channel, exc)
                        continue
                await wake.wait(seen, PLAIN_RECHECK)
        finally:
            wake.users -= 1
            if wake.users == 0:
                # Stay subscribed a while: a worker loop calls receive() again at once.
                asyncio.get_running_loop().call_later(
                    WAKE_LINGER, self._unwatch, channel, wake, topic
                )

    def _unwatch(self, channel: str, wake: _Wake, topic: str) -> None:
        if wake.users == 0 and self._wakes.get(channel) is wake:
            del self._wakes[channel]
            if self._listener is not None:
                self._spawn(self._listener.unsubscribe(topic))

    async def _pop_plain(self, key: str) -> bytes | None:
        # The pop runs to completion even if our caller is cancelled; a message it took
        # is then put back at the head, so a cancelled receive() loses nothing.
        pop = asyncio.ensure_future(
            self._call("receive", lambda c: self._pop_script(keys=[key], client=c))
        )
        try:
            entry = await asyncio.shield(pop)
        except asyncio.CancelledError:
            pop.add_done_callback(lambda done: self._put_back(key, done))
            raise
        return entry if isinstance(entry, bytes) else None

    def _put_back(self, key: str, pop: asyncio.Future[Any]) -> None:
        if pop.cancelled() or pop.exception() is not None:
            return
        entry = pop.result()
        if isinstance(entry, bytes):
            ttl = self._ms(self.expiry) + 1000
            self._spawn(
                self._call(
                    "receive",
                    lambda c: self._push_back_script(keys=[key], args=[entry, ttl], client=c),
                )
            )

    async def receive_local(self) -> tuple[Sequence[str], Message]:
        """Wait for the next message for any channel made by :meth:`new_channel` here."""
        self._require_home("receive_local")
        self._start_receiving()
        return await self._local.get()

    def _start_receiving(self) -> None:
        if self._inbox_task is None or self._inbox_task.done():
            if self._blocking is None:
                pool = make_pool(
                    self.url, timeout=self.timeout, blocking=True, max_connections=1, **self._extra
                )
                self._blocking = Redis(connection_pool=pool)
            self._inbox_task = asyncio.ensure_future(self._read_inbox())
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.ensure_future(self._beat())

    async def _read_inbox(self) -> None:
        """Move messages from this process's inbox in Redis to the local queue.

        One blocking call takes whatever is waiting (``BLMPOP ... COUNT``, or ``BLPOP``
        before Redis 7) and the messages are delivered at once; the per-channel counts
        that enforce capacity are brought down by a script pipelined in front of the
        next blocking call, so it costs no round trip of its own.
        """
        inbox = self.keys.inbox(self.client_id)
        delay = Listener.MIN_DELAY
        failing = False
        while True:
            await self._local.drained.wait()
            try:
                assert self._blocking is not None
                entries = await self._take_from_inbox(self._blocking, inbox)
            except (RedisError, OSError) as exc:
                if not failing:
                    logger.warning("%r: inbox read failed (%s); retrying", self, exc)
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, Listener.MAX_DELAY)
                continue
            if failing:
                logger.warning("%r: inbox reader reconnected", self)
            failing = False
            delay = Listener.MIN_DELAY
            if entries:
                now = self._server_now()
                taken: Counter[str] = Counter()
                for entry in entries:
                    channel = self._deliver_entry(entry, now)
                    if channel is not None:
                        taken[channel] += 1
                self._to_uncount.update(taken)

    async def _take_from_inbox(self, client: Redis, inbox: str) -> list[bytes]:
        """Settle the counts of what was delivered and wait for more, in one round trip."""
        if self._blmpop is None:
            version = str((await client.info("server")).get("redis_version", "0"))
            await client.script_load(scripts.UNCOUNT)
            self._blmpop = int(version.split(".")[0]) >= 7
        taken, self._to_uncount = self._to_uncount, Counter()
        args: list[EncodableT] = []
        for channel, n in taken.items():
            args += [channel, n]
        counts = self.keys.counts(self.client_id)
        try:
            async with client.pipeline(transaction=False) as pipe:
                if taken:
                    pipe.execute_command("EVALSHA", self._uncount_script.sha, 1, counts, *args)
                if self._blmpop:
                    pipe.blmpop(INBOX_WAIT, 1, inbox, direction="LEFT", count=INBOX_BATCH)
                else:
                    pipe.blpop([inbox], timeout=INBOX_WAIT)
                results = await pipe.execute(raise_on_error=False)
        except BaseException:
            # Counted again next time: too low a count beats a channel stuck "full".
            self._to_uncount.update(taken)
            raise
        if taken and isinstance(results[0], NoScriptError):
            # Redis restarted and forgot the script (this call loads it again).
            await self._uncount_script(keys=[counts], args=args, client=client)
        popped: Any = results[-1]
        if isinstance(popped, Exception):
            raise popped
        if not popped:
            return []
        if self._blmpop:
            return [entry for entry in popped[1] if isinstance(entry, bytes)]
        return [popped[1]] if isinstance(popped[1], bytes) else []

    def _deliver_entry(self, entry: bytes, now: float) -> str | None:
        """Queue one inbox entry locally; returns its channel (None if unreadable).

        Expiry is checked against *now*, the server's clock as estimated here.
        """
        space = entry.find(b" ", scripts.STAMP)
        if space < 0:
            logger.error("Dropped a malformed inbox entry for %r", self)
            return None
        channel = entry[scripts.STAMP : space].decode(errors="replace")
        if int(entry[: scripts.STAMP] or 0) <= now:
            return channel
        try:
            message = self._codec.decode(memoryview(entry)[space + 1 :])
        except ValueError as exc:
            logger.error("Dropped a malformed message for %r: %s", channel, exc)
            return channel
        self._local.put((channel,), message)
        return channel

    def _server_now(self) -> float:
        """The server's clock in milliseconds, from ours and the last measured offset."""
        return time.time() * 1000 + self._clock_offset

    async def _beat(self) -> None:
        """Keep this process's heartbeat key alive so others know its channels are read.

        Also measures the offset of the server's clock from ours, used to judge the
        expiry of an inbox entry without another round trip.
        """
        key = self.keys.alive(self.client_id)
        ttl = self._ms(self.heartbeat * 3)

        async def beat(client: Redis) -> None:
            before = time.time()
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(key, b"1", px=ttl)
                pipe.time()
                _, (seconds, micros) = await pipe.execute()
            middle = (before + time.time()) / 2
            self._clock_offset = (seconds + micros / 1e6 - middle) * 1000

        while True:
            try:
                await self._call("heartbeat", beat)
            except LayerError as exc:
                logger.debug("%r: heartbeat failed: %s", self, exc)
            await asyncio.sleep(self.heartbeat)

    # -- groups ----------------------------------------------------------------------------

    def _ensure_listener(self) -> Listener:
        listener = self._listener
        if listener is None:
            pool = make_pool(self.url, timeout=self.timeout, blocking=True, **self._extra)
            listener = self._listener = Listener(
                pool.make_connection,
                self._on_pubsub,
                timeout=self.timeout,
                always=(self.keys.ctl,),
                on_reconnect=self._on_reconnect,
            )
        return listener

    async def group_add(self, group: str, channel: str) -> None:
        """Add *channel* to *group*, refreshing its membership time.

        This process's own channels are kept here and make it subscribe to the group's
        topic (confirmed before returning); any other channel is recorded in Redis.
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        members_key = self.keys.members(group)
        if self.is_local(channel) and self._is_home(asyncio.get_running_loop()):
            members = self._groups.get(group)
            if members is None:
                members = self._groups[group] = {}
            was_member = members.pop(channel, None) is not None
            members[channel] = time.monotonic()
            try:
                # The HDEL undoes an earlier group_add of this channel by another process,
                # which would otherwise deliver it a second copy through the inbox.
                await asyncio.gather(
                    self._ensure_listener().subscribe(self.keys.group_topic(group)),
                    self._call("group_add", lambda c: c.hdel(members_key, channel)),
                )
            except BaseException:
                if not was_member:
                    self._forget_member(group, channel)
                raise
            return
        args: list[EncodableT] = [channel, self.get_capacity(channel), self._ms(self.group_expiry)]
        await self._call(
            "group_add", lambda c: self._group_add_script(keys=[members_key], args=args, client=c)
        )

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove *channel* from *group*; no error if it was not a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        members_key = self.keys.members(group)
        if self.is_local(channel) and self._is_home(asyncio.get_running_loop()):
            self._forget_member(group, channel)
            await self._call("group_discard", lambda c: c.hdel(members_key, channel))
            return
        notice = None
        if self.owner_of(channel) is not None:
            # Its owner may hold the membership itself: tell it too.
            notice = msgpack.packb(["discard", self.client_id, group, channel])

        async def discard(client: Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hdel(members_key, channel)
                if notice is not None:
                    pipe.publish(self.keys.ctl, notice)
                await pipe.execute()

        await self._call("group_discard", discard)

    def _forget_member(self, group: str, channel: str) -> None:
        members = self._groups.get(group)
        if members is None or members.pop(channel, None) is None or members:
            return
        del self._groups[group]
        if self._listener is not None:
            self._spawn(self._listener.unsubscribe(self.keys.group_topic(group)))

    async def group_send(self, group: str, message: Message) -> None:
        """Send *message* to every member of *group* with one Redis call.

        Full members are skipped, counted in :attr:`drops` and logged; never raises for
        them. Raises :class:`RedisUnavailable` when Redis cannot be reached.
        """
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        args: list[EncodableT] = [
            self.prefix,
            self.keys.group_topic(group),
            self._codec.encode(message),
            self._ms(self.expiry),
            self._ms(self.group_expiry),
            self._ms(self.heartbeat * 3),
        ]
        home = self._is_home(asyncio.get_running_loop())
        # Our own process hands the message to its members directly (the very object,
        # as the memory layer does) and skips its own copy from pub/sub.
        args.append(self.client_id if home else _NOBODY)
        keys = [self.keys.members(group)]
        dropped = await self._call(
            "group_send", lambda c: self._group_send_script(keys=keys, args=args, client=c)
        )
        for channel in dropped:
            self.count_drop(group, channel.decode())
        if home:
            members = self._live_members(group)
            if members:
                self._fan_out(group, members, message)

    # -- pub/sub -----------------------------------------------------------------------------

    def _on_pubsub(self, topic_raw: bytes, data: bytes) -> None:
        topic = topic_raw.decode()
        if topic.startswith(self._group_topic_prefix):
            self._on_group_message(topic[len(self._group_topic_prefix) :], data)
        elif topic.startswith(self._wake_topic_prefix):
            wake = self._wakes.get(topic[len(self._wake_topic_prefix) :])
            if wake is not None:
                wake.bump()
        elif topic == self.keys.ctl:
            self._on_control(data)

    def _on_group_message(self, group: str, data: bytes) -> None:
        if data[:_SENDER] == self._sender_tag:
            return  # sent from this process, which delivered it already
        members = self._live_members(group)
        if not members:
            return
        try:
            message = self._codec.decode(memoryview(data)[_SENDER:])
        except ValueError as exc:
            logger.error("Dropped a malformed message for group %r: %s", group, exc)
            return
        self._fan_out(group, members, message)

    def _live_members(self, group: str) -> dict[str, float] | None:
        """This process's members of *group*, with expired memberships dropped."""
        members = self._groups.get(group)
        if not members:
            return None
        stale_before = time.monotonic() - self.group_expiry
        # Members are in join order, so expired memberships are at the front.
        if next(iter(members.values())) <= stale_before:
            for channel, joined in list(members.items()):
                if joined > stale_before:
                    break
                self._forget_member(group, channel)
            members = self._groups.get(group)
        return members

    def _fan_out(self, group: str, members: dict[str, float], message: Message) -> None:
        """Queue *message* once for every local member with room; count the others."""
        room, full = self._local.split_by_room(members)
        for channel in full:
            self.count_drop(group, channel)
        if room:
            self._local.put(tuple(room), message)

    def _on_control(self, data: bytes) -> None:
        try:
            command = msgpack.unpackb(data, raw=False)
            kind, sender = command[0], command[1]
        except Exception:
            logger.error("Ignored a malformed control message on %r", self.keys.ctl)
            return
        if sender == self.client_id:
            return
        if kind == "flush":
            self._flush_local()
        elif kind == "discard" and len(command) == 4:
            group, channel = command[2], command[3]
            if isinstance(channel, str) and self.is_local(channel):
                self._forget_member(str(group), channel)

    def _on_reconnect(self) -> None:
        # Wake-ups may have been missed while disconnected: let plain receivers look again.
        for wake in self._wakes.values():
            wake.bump()

    # -- lifecycle ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Delete every key under this layer's prefix and every process's memberships."""
        pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix) + "*"
        notice = msgpack.packb(["flush", self.client_id])

        async def wipe(client: Redis) -> None:
            batch: list[Any] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)
            await client.publish(self.keys.ctl, notice)

        await self._call("flush", wipe)
        if self._is_home(asyncio.get_running_loop()):
            self._flush_local()

    def _flush_local(self) -> None:
        self._local.clear()
        for group in list(self._groups):
            self._groups.pop(group)
            if self._listener is not None:
                self._spawn(self._listener.unsubscribe(self.keys.group_topic(group)))

    async def close(self) -> None:
        """Stop background tasks, drop this process's heartbeat and close connections."""
        await self._demux.close()
        tasks = [t for t in (self._inbox_task, self._heartbeat_task) if t is not None]
        tasks.extend(self._background)
        await _cancel_all(tasks)
        if self._listener is not None:
            await self._listener.close()
        home = self._home
        if home is not None and home is asyncio.get_running_loop():
            if self._heartbeat_task is not None and self._client is not None:
                key = self.keys.alive(self.client_id)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._client.delete(key), self.timeout)
            for client in (self._client, self._blocking):
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose(close_connection_pool=True)
        self._home = None
        self._reset_state()
