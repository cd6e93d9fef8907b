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

:class:`RedisLayer` is built in layers of its own: :mod:`chanlite_redis.loops` (which
event loop owns the connections, running a command from any loop),
:mod:`chanlite_redis.hearing` (what pub/sub brings: group messages, counting what was
missed, wake-ups, control notices), :mod:`chanlite_redis.streams` (history and presence
calls); this module holds the state, sending, groups and the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import msgpack  # type: ignore[import-untyped]
from redis.asyncio import Redis
from redis.typing import EncodableT

from chanlite.layers import (
    BaseLayer,
    ChannelFull,
    HistoryPolicy,
    LayerConfigError,
    LayerError,
    LocalDemux,
    LocalInbox,
    Message,
    check_stream_message,
)
from chanlite_redis import scripts, sequence
from chanlite_redis.catchup import CatchUp
from chanlite_redis.cluster import ShardedListener, make_listener, queue_copies
from chanlite_redis.codec import make_codec
from chanlite_redis.config import (
    Host,
    abandon,
    close_client,
    make_target,
    masked,
    strip_query,
    target_from_hosts,
)
from chanlite_redis.hearing import NOBODY, SENDER
from chanlite_redis.history import History, StampedCodec
from chanlite_redis.inbox import DIRECT, Inbox
from chanlite_redis.listener import Listener
from chanlite_redis.plain import PlainChannels, PlainParts
from chanlite_redis.presence import Presence
from chanlite_redis.streams import Streams
from chanlite_redis.tasks import stop
from chanlite_redis.trailing import Key, Trailing

logger = logging.getLogger("chanlite.layers.redis")

T = TypeVar("T")

_UNNUMBERED = b"0" * sequence.WIDTH


def _float(value: str) -> float:
    return float(value)


def _nonce() -> str:
    return secrets.token_hex(8)


class RedisLayer(Streams):
    """A channel layer on a Redis server, shared by every process that points at it.

    Usable from chanlite (``App(layer="redis://host:6379/0")``, ``--layer redis://...``)
    and as a Django Channels ``CHANNEL_LAYERS`` backend
    (``"BACKEND": "chanlite_redis.RedisLayer"``, ``"CONFIG": {"hosts": [...]}``).
    """

    extensions: ClassVar[list[str]] = [*BaseLayer.extensions, "history", "presence"]

    url_options: ClassVar[Mapping[str, Callable[[str], Any]]] = {
        **BaseLayer.url_options,
        "prefix": str,
        "timeout": _float,
        "heartbeat": _float,
        "max_connections": int,
        "ssl_cert_reqs": str,
        "ssl_ca_certs": str,
        "db": int,
        "sentinel_password": str,
        "sentinel_username": str,
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
        db: int | None = None,
        sentinel_password: str | None = None,
        sentinel_username: str | None = None,
        **options: Any,
    ) -> None:
        """Point the layer at one Redis server, or at the master of a Sentinel group.

        *url* is ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://`` for TLS,
        or ``redis+sentinel://[[user]:password@]host[:port],.../service[/db]`` for the
        master Sentinel names *service* (*db*, *sentinel_password* and
        *sentinel_username* apply to that form only; the URL's password is the servers').
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
            url, extra = target_from_hosts(hosts)
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
        # Where connections go; fails on a malformed URL now rather than at the first send.
        self._target = make_target(
            self.url,
            extra,
            db=db,
            sentinel_password=sentinel_password,
            sentinel_username=sentinel_username,
        )
        # Reads payloads stamped with an offset by the history scripts, too.
        self._codec = StampedCodec(make_codec(symmetric_encryption_keys))
        self._where = self._target.where
        self._sender_tag = self.client_id.encode()
        if len(self._sender_tag) != SENDER:
            raise LayerConfigError("client_id must be 12 characters")
        # Topics are "<prefix>g:{<group>}" and "<prefix>w:{<channel>}" (hash tags).
        self._group_topic_prefix = self.keys.group_topic("")[:-1]
        self._wake_topic_prefix = self.keys.wake_topic("")[:-1]
        self._home: asyncio.AbstractEventLoop | None = None
        self._history = History(
            prefix=prefix,
            codec=self._codec,
            call=self._call,
            keep=self.group_expiry,
            cluster=self._target.cluster,
        )
        # Fills a history group's gap in live delivery after pub/sub was lost (outlives loops).
        self._catchup = CatchUp(self._read_missed, self._deliver_group)
        #: Messages this process should have received and did not, by group (pub/sub
        #: lost them), and under ``"!inbox"`` direct messages to its channels that Redis
        #: lost (:mod:`chanlite_redis.sequence`).
        self.lost: Counter[str] = Counter()
        self._numbering = sequence.Numbering()
        self._direct = sequence.DirectNumbering(self._sender_tag)
        # Markers after the last message to a group or process (outlives loops).
        self._trailing = Trailing(self._send_marker, self._spawn)
        self._notices: deque[str] = deque(maxlen=64)  # control notices already handled
        # Tasks now inside a Redis call on the owning loop: kept until they leave it, so
        # that end_abandoned() finds them if their loop is closed under them.
        self._inside: Counter[asyncio.Task[Any]] = Counter()
        self._presence = Presence(
            prefix=prefix,
            client_id=self.client_id,
            codec=self._codec,
            call=self._call,
            send_diff=self._send_diff,
            timeout=self.presence_timeout,
        )
        self._reset_state()

    @classmethod
    def from_url(cls, url: str) -> RedisLayer:
        """Build from ``redis://[:password@]host:port/db?capacity=...&expiry=...``."""
        return cls(strip_query(url), **cls.parse_url_options(url))

    @classmethod
    def parse_url_options(cls, url: str) -> dict[str, Any]:
        """The query's options, as :meth:`BaseLayer.parse_url_options`; an error about
        them shows the URL with its passwords masked (``***``)."""
        try:
            return super().parse_url_options(url)
        except LayerConfigError as exc:
            raise LayerConfigError(str(exc).replace(url, masked(url))) from None

    def __repr__(self) -> str:
        return f"<RedisLayer {self._where} prefix={self.prefix!r} client={self.client_id}>"

    # -- event loop ownership (the rest is in loops.py) ---------------------------------

    def _reset_state(self) -> None:
        """Fresh state: what this process holds (kept across event loops), then per loop."""
        # What the process holds outlives any one event loop: messages queued for local
        # channels and local memberships. A loop that takes over keeps them.
        self.local_inbox = self._local = LocalInbox(
            expiry=self.expiry, capacity_of=self.get_capacity, min_capacity=self.min_capacity()
        )
        # group -> {local channel: monotonic join time}, in join order.
        self._groups: dict[str, dict[str, float]] = {}
        grace = max(self.timeout, 0.5)
        self._gaps = sequence.Gaps(grace, self._count_lost)
        self._direct_gaps = sequence.Gaps(grace, self._count_lost_direct)
        self._inbox = Inbox(
            # A cluster with shard channels runs Redis 7 or later: BLMPOP is there.
            redis7=True if self._target.cluster else None,
            keys=self.keys,
            client_id=self.client_id,
            codec=self._codec,
            local=self._local,
            gaps=self._direct_gaps,
            where=self._where,
        )
        # Sorts local messages per channel for receive(); what it holds outlives loops too.
        self._demux = LocalDemux(self._local, prepare=self._prepare_local)
        self._reset_loop_state()

    def _reset_loop_state(self) -> None:
        """Fresh per-loop state: connections, the listener, background tasks."""
        self._client: Redis | None = None
        self._blocking: Redis | None = None
        self._listener: Listener | ShardedListener | None = None
        self._failing = False  # the last command failed for want of Redis
        self._plain: PlainChannels | None = None
        self._inbox_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open this loop's connections and listen again to the groups with local members."""
        # The connections of a closed loop cannot be closed from here; they are dropped.
        self._reset_loop_state()
        self._home = loop
        client = self._client = self._target.client(
            timeout=self.timeout,
            blocking=False,
            max_connections=self.max_connections,
            bounded=True,
        )
        # On a cluster the scripts publish on shard channels.
        script = scripts.for_cluster if self._target.cluster else str
        self._send_script = client.register_script(script(scripts.SEND))
        self._group_send_script = client.register_script(script(scripts.GROUP_SEND))
        self._mark_script = client.register_script(script(scripts.MARK))
        self._mark_direct_script = client.register_script(scripts.MARK_DIRECT)
        self._group_add_script = client.register_script(scripts.GROUP_ADD)
        self._uncount_script = client.register_script(scripts.UNCOUNT)
        self._plain = PlainChannels(
            PlainParts(
                keys=self.keys,
                codec=self._codec,
                call=self._call,
                pop=client.register_script(scripts.POP),
                restore=client.register_script(scripts.RESTORE),
                subscribe=self._subscribe,
                unsubscribe=self._unsubscribe,
                expiry_ms=self._ms(self.expiry),
                timeout=self.timeout,
            )
        )
        if self._groups:
            # Group messages published while no loop listened are not replayed (pub/sub
            # is at-most-once); from now on they are heard again.
            self._ensure_listener().want(self.keys.group_topic(group) for group in self._groups)
            self._start_catch_up()
        if self._presence.mine:
            self._start_presence()  # the entries this process holds live on this loop now
        if self._trailing.pending():
            self._trailing.again()  # markers a closed loop still owed go from this one

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
            if self._local.offer((channel,), message):
                raise ChannelFull(channel)
            return
        if not await self._queue(channel, self._codec.encode(message), None, "send"):
            raise ChannelFull(channel)

    async def _queue(self, channel: str, payload: bytes, cap: int | None, what: str) -> bool:
        """Queue *payload* on *channel* (numbered if it goes to a process's inbox)."""
        owner = self.owner_of(channel)
        if owner is None:
            return await self._store(channel, None, payload, cap, what)
        # The owner's trailing marker carries the last number taken: it waits until this
        # send is over, so that it never reaches the owner before the message.
        with self._trailing.sending(("d", owner)):
            stored = await self._store(
                channel, owner, self._direct.take(owner) + payload, cap, what
            )
            if not stored:
                self._direct.refused(owner)  # its number will not arrive, and is not lost
        return stored

    async def _store(
        self, channel: str, owner: str | None, payload: bytes, cap: int | None, what: str
    ) -> bool:
        args: list[EncodableT] = [
            self.prefix,
            channel,
            payload,
            self.get_capacity(channel) if cap is None else cap,
            self._ms(self.expiry),
        ]
        keys = self.keys.send_keys(channel, owner)
        stored = await self._call(what, lambda c: self._send_script(keys=keys, args=args, client=c))
        return bool(stored)

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on *channel* (local ones through ``receive_local``)."""
        self.require_valid_channel_name(channel, receive=True)
        self._require_home("receive")
        if self.is_local(channel):
            return await self._demux.receive(channel)
        assert self._plain is not None  # made with the loop's connections
        return await self._plain.receive(channel)

    async def receive_local(self) -> tuple[Sequence[str], Message]:
        """Wait for the next message for any channel made by :meth:`new_channel` here."""
        await self._prepare_local()
        return await self._local.get()

    async def _prepare_local(self) -> None:
        # Before waiting for local messages: this loop reads this process's inbox.
        self._require_home("receive_local")
        self._start_receiving()

    def _start_receiving(self) -> None:
        if self._blocking is None:
            self._blocking = self._target.client(
                timeout=self.timeout, blocking=True, max_connections=1
            )
        if self._inbox_task is None or self._inbox_task.done():
            self._inbox_task = asyncio.ensure_future(
                self._inbox.run(self._blocking, self._uncount_script)
            )
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.ensure_future(
                self._inbox.beat(self._call, self.heartbeat)
            )
        # Every receiving process takes part in sweeping dead processes' presence.
        self._start_presence()

    # -- groups ----------------------------------------------------------------------------

    def _ensure_listener(self) -> Listener | ShardedListener:
        listener = self._listener
        if listener is None:
            assert self._client is not None  # made with the loop's connections
            listener = self._listener = make_listener(
                self._target,
                self._client,
                self._on_pubsub,
                timeout=self.timeout,
                always=(self.keys.ctl,),
                on_reconnect=self._on_reconnect,
            )
        return listener

    async def _subscribe(self, topic: str) -> None:
        with self._in_redis():
            await self._ensure_listener().subscribe(topic)

    def _unsubscribe(self, topic: str) -> None:
        if self._listener is not None:
            self._spawn(self._listener.unsubscribe(topic))

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
                    self._subscribe(self.keys.group_topic(group)),
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
            # Its owner may hold the membership itself: tell it too (this layer object
            # too, when called from a loop other than its own).
            notice = msgpack.packb(["discard", NOBODY, group, channel, _nonce()])

        async def discard(client: Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hdel(members_key, channel)
                if notice is not None:
                    pipe.publish(self.keys.ctl, notice)
                await pipe.execute()

        await self._call("group_discard", discard)

    async def group_send(self, group: str, message: Message) -> None:
        """Send *message* to every member of *group* with one Redis call.

        Full members are skipped, counted in :attr:`drops` and logged; never raises for
        them. In a history group the same call gives the message its offset and stores
        it; members get ``{**message, "offset", "epoch", "group"}``. Raises
        :class:`RedisUnavailable` when Redis cannot be reached.
        """
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        policy = self.history_policy(group)
        if policy is not None:
            check_stream_message(group, message)
        await self._group_send(group, message, policy)

    async def _send_diff(self, group: str, diff: Message) -> None:
        # Presence diffs reach the members but are not part of a group's history.
        await self._group_send(group, diff, None)

    async def _group_send(self, group: str, message: Message, policy: HistoryPolicy | None) -> None:
        args: list[EncodableT] = [
            self.prefix,
            self.keys.group_topic(group),
            self._codec.encode(message),
            self._ms(self.expiry),
            self._ms(self.group_expiry),
            # On a cluster the members' keys are elsewhere: their copies are queued below.
            -1 if self._target.cluster else self._ms(self.heartbeat * 3),
        ]
        # Our own process hands the message to its members directly (the very object,
        # as the memory layer does) and skips its own copy from pub/sub. Not in a history
        # group: there its members must get the group's messages in offset order, and
        # only the pub/sub connection sees them in that order (a message another process
        # sent just after ours may arrive there before the reply to our own script).
        local = policy is None and self._is_home(asyncio.get_running_loop())
        skip = self._sender_tag if local else NOBODY.encode()
        keys = [self.keys.members(group)]
        if policy is None:
            # The group's trailing marker carries the last number taken: it waits until
            # this send is over, so that it never reaches a process before the message.
            with self._trailing.sending(("g", group)):
                args.append(skip + self._sender_tag + self._numbering.take(group))
                dropped = await self._call(
                    "group_send", lambda c: self._group_send_script(keys=keys, args=args, client=c)
                )
        else:
            # History messages are not numbered: their offsets say what a process missed.
            args.append(skip + self._sender_tag + _UNNUMBERED)
            _, _, dropped = await self._history.send(group, policy, keys, args)
        if dropped and dropped[0][:1] == b"\2":
            dropped = await queue_copies(dropped, self._queue_copy)
        full = [channel.decode() for channel in dropped]
        members = self._live_members(group) if local else None
        if members:
            full += await self._local.offer_waiting(tuple(members), message)
        # The script names the members it dropped, not how many it served.
        self.count_drops(group, full, None if dropped else len(members or ()))

    async def _send_marker(self, key: Key) -> None:
        """Send the trailing marker of *key*: ``("g", group)`` or ``("d", owner)``."""
        kind, name = key
        if kind == "g":
            number = self._numbering.last(name)
            if number is None:
                return
            keys = [self.keys.members(name)]
            # Its own process skips it: a process never misses its own messages.
            args: list[EncodableT] = [
                self.keys.group_topic(name),
                self._sender_tag + self._sender_tag + number,
            ]
            await self._call("marker", lambda c: self._mark_script(keys=keys, args=args, client=c))
            return
        header = self._direct.last(name)
        if header is None:
            return
        keys = [self.keys.inbox(name), self.keys.counts(name)]
        args = [header, self._ms(self.expiry)]
        await self._call(
            "marker", lambda c: self._mark_direct_script(keys=keys, args=args, client=c)
        )

    async def _queue_copy(self, channel: str, payload: bytes, cap: int) -> bool:
        return await self._queue(channel, payload, cap, "group_send")

    async def flush(self) -> None:
        """Delete every key under this layer's prefix and every process's memberships."""
        pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix) + "*"
        home = self._is_home(asyncio.get_running_loop())
        # This layer object clears its own memberships itself when on its own loop.
        notice = msgpack.packb(["flush", self.client_id if home else NOBODY, _nonce()])
        self._presence.forget()  # before the keys go, so no refresh joins them again

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
        if home:
            self._flush_local()

    def _flush_local(self) -> None:
        self._local.clear()
        self._direct_gaps.forget(DIRECT)  # the inbox was wiped on purpose
        # The entries are gone from Redis: none is refreshed or joined again.
        self._presence.forget()
        for group in list(self._groups):
            self._groups.pop(group)
            self._gaps.forget(group)
            if self._listener is not None:
                self._spawn(self._listener.unsubscribe(self.keys.group_topic(group)))

    async def close(self) -> None:
        """Stop background tasks, drop this process's heartbeat and close connections.

        Returns within about twice ``timeout`` whatever the tasks were doing.
        """
        await self._demux.close()
        if self._home is asyncio.get_running_loop() and not self._failing:
            # The markers after this process's last messages go now, not never (once the
            # sends still under way are over: Trailing.flush).
            await self._trailing.flush(self.timeout)
        presence_task = self._presence_task
        if presence_task is not None and presence_task.get_loop() is asyncio.get_running_loop():
            # No refresh between the leaves below and the end: it would refresh the
            # process in the registry after it left.
            await stop([presence_task], self.timeout)
        if self._presence.mine:
            # Leave at once rather than after the others' sweep (best effort: if Redis is
            # down they sweep these entries within presence_timeout).
            try:
                await asyncio.wait_for(self._presence.drop_all(), self.timeout)
            except (LayerError, asyncio.TimeoutError) as exc:
                logger.warning("%r: presence entries not removed at close: %s", self, exc)
            self._presence.mine.clear()
        tasks = [
            t
            for t in (self._inbox_task, self._heartbeat_task, self._presence_task)
            if t is not None
        ]
        tasks.extend(self._background)
        await stop(tasks, self.timeout)
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
                        await asyncio.wait_for(close_client(client), self.timeout)
        elif home is not None and home.is_closed():
            for client in (self._client, self._blocking):
                abandon(client)
        self._home = None
        self._reset_state()
