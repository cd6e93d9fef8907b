"""``sqlite:///path.db``: one channel layer shared by every process that opens the file.

Each :class:`SQLiteLayer` object is one *process* of the layer (its ``client_id``):

* channels made by :meth:`~SQLiteLayer.new_channel` are local to it; a direct message from
  another process is one row addressed to it; one from itself never touches the file;
* a group message is **one** row; every process reads it and delivers it to its own
  members as one ``(members, message)`` item of :meth:`~SQLiteLayer.receive_local`;
* plain channel names (``"chat"``) are shared queues any process may ``receive`` from.

Writes are batched (see :mod:`chanlite_sqlite.writer`); reading, waking, heartbeats and
trimming happen in one thread per layer object (see :mod:`chanlite_sqlite.watcher`).
If the file is deleted or replaced while in use, the process notices within
``poll_interval``, opens the path again and registers itself, its channels and its
memberships there (one WARNING line with what was lost); if it cannot (the folder is
gone) it logs one ERROR line and stops its process (``stop_process``: SIGTERM, a graceful
shutdown) rather than run on deaf.
Code without an event loop can use :meth:`SQLiteLayer.send_blocking` and
:meth:`SQLiteLayer.group_send_blocking` (:class:`chanlite.layers.BlockingSends`, see
:mod:`chanlite_sqlite.blocking`); local delivery goes through the toolkit's
:class:`~chanlite.layers.ThreadSafeInbox`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike, fspath
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from chanlite.broadcast import broadcast_event
from chanlite.layers import (
    BaseLayer,
    ChannelFull,
    HistoryPage,
    HistoryPolicy,
    LayerConfigError,
    LocalDemux,
    Message,
    MsgpackCodec,
    StreamPosition,
    ThreadSafeInbox,
    check_limit,
    check_position,
    check_presence,
    check_stream_message,
    stream_message,
)
from chanlite_sqlite.blocking import BlockingWriter
from chanlite_sqlite.connection import Connection
from chanlite_sqlite.errors import DatabaseFileError
from chanlite_sqlite.history import HistoryReader, prune
from chanlite_sqlite.ordering import Entry as StreamEntry
from chanlite_sqlite.ordering import StreamOrder
from chanlite_sqlite.plain import PlainReceivers
from chanlite_sqlite.presence import (
    Entry,
    Join,
    Leave,
    LeaveOwned,
    PresenceWriter,
    Sweeper,
    encode_meta,
    listing,
)
from chanlite_sqlite.watcher import FileEvents, Incoming, Watcher
from chanlite_sqlite.writer import (
    Ack,
    Flush,
    GroupAdd,
    GroupDiscard,
    GroupSend,
    Send,
    Writer,
    connect_async,
)

logger = logging.getLogger("chanlite.layers.sqlite")

_CLIENT_ID = re.compile(r"^[0-9a-f]{12}$")


def _seconds(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a positive number of seconds")
    return number


class SQLiteLayer(BaseLayer):
    """A channel layer in one SQLite file, shared by every process on the machine.

    ``SQLiteLayer(path="chat.db", capacity=100, expiry=60, group_expiry=86400)``, or from a
    URL: ``sqlite:///relative.db``, ``sqlite:////absolute.db?capacity=200``. Tuning knobs
    (also URL options): ``poll_interval`` (fallback check for commits, seconds),
    ``heartbeat`` and ``heartbeat_timeout`` (a process silent this long is dead: its
    memberships and unread messages are removed) and ``timeout`` (how long to wait for a
    lock before reporting the file as locked).

    The database is opened on first use; errors about the file (locked, read-only, not a
    chanlite database) are :class:`~chanlite_sqlite.DatabaseFileError` naming it.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush", "history", "presence"]

    url_options: ClassVar[Mapping[str, Any]] = {
        **BaseLayer.url_options,
        "poll_interval": _seconds,
        "heartbeat": _seconds,
        "heartbeat_timeout": _seconds,
        "timeout": _seconds,
    }

    def __init__(
        self,
        path: str | PathLike[str] = "chanlite.db",
        *,
        capacity: int = 100,
        expiry: float = 60,
        group_expiry: float = 86400,
        channel_capacity: Mapping[str | re.Pattern[str], int] | None = None,
        history: Mapping[str, HistoryPolicy] | None = None,
        presence_timeout: float = 30.0,
        poll_interval: float = 0.05,
        heartbeat: float = 1.0,
        heartbeat_timeout: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(
            capacity=capacity,
            expiry=expiry,
            group_expiry=group_expiry,
            channel_capacity=channel_capacity,
            history=history,
            presence_timeout=presence_timeout,
        )
        path = fspath(path)
        if not path or path == ":memory:" or path.startswith("file:"):
            raise LayerConfigError(
                f"The SQLite layer needs a file path every process can open, not {path!r}"
            )
        for name, value in (
            ("poll_interval", poll_interval),
            ("heartbeat", heartbeat),
            ("heartbeat_timeout", heartbeat_timeout),
            ("timeout", timeout),
        ):
            if value <= 0:
                raise LayerConfigError(f"{name} must be positive, not {value}")
        if heartbeat_timeout <= heartbeat:
            raise LayerConfigError(
                f"heartbeat_timeout ({heartbeat_timeout}) must be longer than heartbeat "
                f"({heartbeat})"
            )
        self.path = path
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.heartbeat_timeout = heartbeat_timeout
        self.timeout = timeout
        self._watcher: Watcher | None = None
        self._writer: Writer | None = None
        self._db: Connection | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._codec = MsgpackCodec()
        # Messages for local channels. Expiry times cross processes: wall clock. Direct
        # messages from other processes carry their row id, deleted once delivered.
        # The watcher thread puts into it too.
        self.local_inbox = self._inbox = ThreadSafeInbox(
            expiry=expiry,
            capacity_of=self.get_capacity,
            min_capacity=self.min_capacity(),
            clock=time.time,
            acknowledge=self._ack,
        )
        self._demux = LocalDemux(self._inbox, prepare=self._start)
        self._plain = PlainReceivers(lambda: self._writer, self._codec)
        self._blocking: BlockingWriter | None = None
        self._pid = os.getpid()
        # (group, local channel) -> membership expiry, as this process added them.
        self._joined: dict[tuple[str, str], float] = {}
        # History messages reach local members in offset order, own ones at commit.
        self._order = StreamOrder(self._deliver_stream)
        self._reader: HistoryReader | None = None
        self._presence_writer = PresenceWriter(
            self._shared_blocking, self._codec, lambda: self.client_id
        )
        self._waking = False  # a wake-up of this process's reader is scheduled
        # (group, channel) -> (key, stored meta): this process's presence entries.
        self._present: dict[tuple[str, str], Entry] = {}
        # The file deleted or replaced under us: the move to the new one (pending while
        # the watcher reopens the path), the count of moves (row ids of acks refer to one
        # file), and the error if the path could not be opened again.
        self._moving: concurrent.futures.Future[None] | None = None
        self._file_generation = 0
        self._lost_file: DatabaseFileError | None = None
        #: Times the file was found deleted or replaced and opened again.
        self.reopened = 0
        #: Messages left in deleted or replaced files that no process could read.
        self.lost_messages = 0

    def _after_fork(self) -> None:
        # A layer made before a fork (a pre-fork server importing the app) must not share
        # its client_id with its siblings: each process gets its own, before first use.
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._blocking = None  # an sqlite3 connection must not cross a fork
        self._reader = None
        if self._writer is None:
            self.client_id = secrets.token_hex(6)

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new channel name local to this process (received through ``receive_local``)."""
        self._after_fork()
        return await super().new_channel(prefix)

    @classmethod
    def from_url(cls, url: str) -> SQLiteLayer:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db``, options as a query."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqlite":
            raise LayerConfigError(f"Not an SQLite layer URL: {url!r}")
        if parts.netloc:
            raise LayerConfigError(
                f"SQLite layer URL {url!r} names a host ({parts.netloc!r}); use three slashes "
                "for a relative path (sqlite:///chat.db) or four for an absolute one "
                "(sqlite:////var/chat.db)"
            )
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path or path.endswith("/"):
            raise LayerConfigError(
                f"SQLite layer URL {url!r} has no file name; e.g. sqlite:///chat.db"
            )
        return cls(path, **cls.parse_url_options(url))

    @property
    def storage_created(self) -> bool:
        """Whether this layer object created the database file (it did not exist)."""
        blocking, watcher = self._blocking, self._watcher
        return bool(
            (blocking is not None and blocking.created) or (watcher is not None and watcher.created)
        )

    def __repr__(self) -> str:
        return f"<SQLiteLayer {self.path!r} client_id={self.client_id}>"

    # -- start-up ---------------------------------------------------------------------

    async def _start(self) -> Writer:
        writer = self._writer
        if writer is not None:
            return writer
        self._after_fork()
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._lost_file is not None:
            raise self._lost_file
        task = self._starting
        if task is not None and task.get_loop().is_closed():
            task = None  # its loop ended mid-way (what it opened is released with it)
        if task is None:
            # A task of its own: a caller cancelled while waiting does not cancel start-up
            # for the others.
            task = self._starting = asyncio.get_running_loop().create_task(self._open())
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._starting is task and self._writer is None:
                self._starting = None  # failed: the next call tries again
        assert self._writer is not None
        return self._writer

    async def _open(self) -> None:
        sweeper = Sweeper(
            self.client_id,
            codec=self._codec,
            timeout=self.presence_timeout,
            dead_after=self.heartbeat_timeout,
            expiry=self.expiry,
            capacity_of=self.get_capacity,
            entries=self._own_presence,
        )

        def on_beat(conn: sqlite3.Connection, now: float, restored: bool) -> bool:
            prune(conn, now)
            return sweeper.beat(conn, now, restored)

        watcher = Watcher(
            self.path,
            self.client_id,
            timeout=self.timeout,
            poll_interval=self.poll_interval,
            # Presence entries are as alive as their process's heartbeat.
            heartbeat=min(self.heartbeat, self.presence_timeout / 3),
            heartbeat_timeout=self.heartbeat_timeout,
            deliver=self._deliver_incoming,
            order=self._order,
            codec=self._codec,
            changed=self._plain.remote_change,
            memberships=self._own_memberships,
            on_beat=on_beat,
            file_events=FileEvents(self._release_file, self._file_reopened, self._file_lost),
            create=self.create_storage,
        )
        watcher.start()
        db: Connection | None = None
        try:
            # Shielded: a cancel here must not cancel ``ready``, or the thread, finding
            # nobody waiting, would unregister this client_id, which the next start-up
            # (on the next event loop) may have registered again by then.
            await asyncio.shield(asyncio.wrap_future(watcher.ready))
            db = await connect_async(self.path, self.timeout)
        except BaseException:
            watcher.stop()
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            raise
        self._watcher, self._db = watcher, db
        self._writer = Writer(db, self.path, self.timeout, self)

    async def reconnect(self) -> Connection:
        """A new write connection (the writer's died with an event loop, or the file
        under it was deleted or replaced: then once the watcher has moved us)."""
        moving = self._moving
        if moving is not None:
            await asyncio.wrap_future(moving)
        return await connect_async(self.path, self.timeout)

    # -- the file deleted or replaced ---------------------------------------------------------

    def _pending_move(self) -> concurrent.futures.Future[None]:
        with self._lock:
            moving = self._moving
            if moving is None or moving.done():
                moving = self._moving = concurrent.futures.Future()
            return moving

    def file_changed(self) -> None:
        """The writer found the path naming another file: the watcher moves us now."""
        self._pending_move()
        watcher = self._watcher
        if watcher is not None:
            watcher.check_file()

    def _release_file(self) -> concurrent.futures.Future[None]:
        # Watcher thread: every connection to the old file goes; acks of its rows too.
        self._pending_move()
        with self._lock:
            self._file_generation += 1
        blocking = self._blocking
        if blocking is not None:
            blocking.close()
        writer = self._writer
        if writer is not None:
            return writer.release_soon()
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        done.set_result(None)
        return done

    def _file_reopened(self, lost: int) -> None:
        self._order.reset()  # the new file's streams start in new epochs
        self.reopened += 1
        self.lost_messages += lost
        moving = self._moving
        if moving is not None and not moving.done():
            moving.set_result(None)

    def _file_lost(self, error: DatabaseFileError) -> None:
        # Watcher thread, the error logged already: fail what waits, refuse what comes,
        # and stop the process, which would otherwise serve without reaching anyone.
        self._lost_file = error
        moving = self._moving
        if moving is not None and not moving.done():
            moving.set_exception(error)
        self.stop_process(error)

    # -- writer hooks ---------------------------------------------------------------------

    def committed_group_send(self, op: GroupSend) -> None:
        """Queue a committed group message for this process's members (one entry).

        Members that are full are left in ``op.full`` for :meth:`group_send`, which may
        wait for this process's reader before counting them as drops.
        """
        if op.offset is not None and op.epoch is not None:
            # A history message: in offset order with other processes' messages, which
            # may hold it until this process's reader has read what comes before it.
            op.announced = False
            event = stream_message(op.event, op.group, op.offset, op.epoch) if op.local else {}
            entry = StreamEntry(op.offset, op.epoch, tuple(op.local), event, op.expires)
            if self._order.written(op.group, entry):
                self._wake_own_reader()
            return
        if op.local:
            op.full = self._inbox.offer(op.local, op.event, expires=op.expires)

    def stream_writing(self, op: GroupSend) -> None:
        """*op* is about to get its offset: hold other processes' messages to its group."""
        self._order.writing(op.group)

    def stream_abandoned(self, op: GroupSend) -> None:
        """*op* was not committed: its group's messages need not wait for it."""
        if self._order.written(op.group, None):
            self._wake_own_reader()

    def _deliver_stream(self, group: str, entries: list[StreamEntry]) -> None:
        # Under the order's lock, from the writer's or the reader's thread. A full member
        # keeps a history.missed notice in place of the message (read back from history).
        inbox = self._inbox
        for entry in entries:
            if entry.channels:
                full = inbox.offer(
                    entry.channels, entry.message, expires=entry.expires, missed=True
                )
                if full:
                    self.count_drops(group, full, len(entry.channels))

    def _wake_own_reader(self) -> None:
        # One datagram per turn of the event loop, however many messages were committed.
        if not self._waking:
            self._waking = True
            asyncio.get_running_loop().call_soon(self._poke_own_reader)

    def _poke_own_reader(self) -> None:
        self._waking = False
        watcher = self._watcher
        if watcher is not None:
            watcher.poke([watcher.port])

    def encode_stream(self, op: GroupSend) -> bytes:
        """*op*'s message with its offset, epoch and group, encoded (for plain members)."""
        assert op.offset is not None and op.epoch is not None
        return self._codec.encode(stream_message(op.event, op.group, op.offset, op.epoch))

    def committed_plain(self, channels: set[str]) -> None:
        """Rows were just added to *channels*: local receivers claim them now."""
        self._plain.committed(channels)

    def peer_ports(self, owners: set[str] | None) -> list[int]:
        """The wake-up ports of *owners*, or of every other process for None."""
        watcher = self._watcher
        if watcher is None:
            return []
        peers = watcher.peers
        if owners is None:
            return list(peers.values())
        return [peers[owner] for owner in owners if owner in peers]

    def poke(self, ports: list[int]) -> None:
        """Wake the readers listening on *ports*."""
        if self._watcher is not None and ports:
            self._watcher.poke(ports)

    # -- local delivery -----------------------------------------------------------------

    def _deliver_incoming(self, batch: list[Incoming]) -> None:
        # Called by the watcher thread with messages other processes wrote for us.
        inbox = self._inbox
        order = self._order
        for item in batch:
            if item.offset is not None:  # a history message: in offset order
                order.read(
                    item.group,
                    StreamEntry(item.offset, item.epoch, item.channels, item.message, item.expires),
                )
                continue
            ack = None if item.ack is None else (self._file_generation, item.ack)
            full = inbox.offer(
                item.channels, item.message, expires=item.expires, ack=ack, missed=True
            )
            if not full:
                continue
            if item.group:
                self.count_drops(item.group, full, len(item.channels))
            else:
                # The sender saw room in the file, but group messages fill the channel
                # here. The row stays (counting against the channel) until it expires.
                logger.warning(
                    "Direct message to %r dropped: the channel is full (capacity %d)",
                    full[0],
                    self.get_capacity(full[0]),
                )

    def _ack(self, acks: list[tuple[int, int]]) -> None:
        # Direct messages from other processes left the inbox: delete their rows (not
        # rows of a file since deleted or replaced: the ids would name other messages).
        writer = self._writer
        generation = self._file_generation
        rows = [row for made, row in acks if made == generation]
        if writer is not None and rows:
            writer.submit(Ack(rows))

    # -- direct messages -------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue *message* on *channel*; raise :class:`ChannelFull` at capacity."""
        self.require_valid_message(message)
        self.require_valid_channel_name(channel)
        payload, copy = self._codec.encode_copy(message)
        now = time.time()
        if self.is_local(channel):
            # Our own channel: straight into the inbox, the file is not involved.
            if self._inbox.offer((channel,), copy, expires=now + self.expiry):
                raise ChannelFull(channel)
            return
        writer = await self._start()
        owner = self._owner(channel)
        await writer.call(
            Send(channel, owner, payload, now + self.expiry, self.get_capacity(channel), None)
        )

    async def send_counted(self, channel: str, message: Message) -> int | None:
        """:meth:`send`, returning 1 or 0 for a process-specific channel whose process is
        registered or not, None for a plain channel (a queue)."""
        await self.send(channel, message)
        if self.is_local(channel):
            return 1
        owner = self._owner(channel)
        if not owner:
            return None
        watcher = self._watcher
        return int(watcher is not None and owner in watcher.peers)

    @staticmethod
    def _owner(channel: str) -> str:
        """The process owning *channel*, or '' for a plain (shared) channel."""
        owner = BaseLayer.owner_of(channel)
        return owner if owner is not None and _CLIENT_ID.match(owner) else ""

    async def receive(self, channel: str) -> Message:
        """Wait for the next message on *channel* (local names go through ``receive_local``)."""
        self.require_valid_channel_name(channel, receive=True)
        if self.is_local(channel):
            await self._start()
            return await self._demux.receive(channel)
        await self._start()
        return await self._plain.receive(channel)

    async def receive_local(self) -> tuple[Sequence[str], Message]:
        """Wait for the next message for any channel made by :meth:`new_channel` here."""
        await self._start()
        return await self._inbox.get()

    # -- groups -------------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add *channel* to *group* for ``group_expiry`` seconds (refreshed on each add)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        writer = await self._start()
        expires = time.time() + self.group_expiry
        if self.is_local(channel):
            with self._lock:
                joined = self._joined
                joined[group, channel] = expires
                if len(joined) % 1024 == 0:  # forget memberships that expired meanwhile
                    now = time.time()
                    for key in [key for key, until in joined.items() if until <= now]:
                        del joined[key]
        await writer.call(GroupAdd(group, channel, self._owner(channel), expires, None))

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove *channel* from *group*; no error if it was not a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        writer = await self._start()
        with self._lock:
            self._joined.pop((group, channel), None)
        await writer.call(GroupDiscard(group, channel, None))

    def _own_memberships(self) -> list[tuple[str, str, float]]:
        # Watcher thread: what to restore if this process was presumed dead.
        with self._lock:
            return [(group, channel, expires) for (group, channel), expires in self._joined.items()]

    async def group_send(self, group: str, message: Message) -> None:
        """Write *message* once for the whole group; each process delivers to its members.

        Returns once the message is committed. Members that are full are dropped and counted
        (in ``drops`` of the process that holds them) and logged, never raised.
        """
        await self._group_send(group, message, count=False)

    async def group_send_counted(self, group: str, message: Message) -> int:
        """:meth:`group_send`, returning how many members (in every process) *group* had
        in the transaction that stored it."""
        return await self._group_send(group, message, count=True)

    async def _group_send(self, group: str, message: Message, count: bool) -> int:
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        policy = self.history_policies.lookup(group)  # cached: one dict hit
        if policy is not None:
            check_stream_message(group, message)
        payload, copy = self._codec.encode_copy(message)
        writer = await self._start()
        op = GroupSend(
            group, payload, copy, time.time() + self.expiry, None, history=policy, count=count
        )
        await writer.call(op)
        full = op.full
        if full:
            try:
                full = await self._inbox.retry_full(full, copy, expires=op.expires)
            finally:
                self.count_drops(group, [*full, *op.dropped], len(op.local) + len(op.plain))
        elif op.dropped:
            self.count_drops(group, op.dropped, len(op.local) + len(op.plain) + len(op.dropped))
        return op.members

    # -- blocking sends (chanlite.layers.BlockingSends) ------------------------------------

    def _blocking_writer(self) -> BlockingWriter:
        self._after_fork()
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return self._shared_blocking()

    def _shared_blocking(self) -> BlockingWriter:
        # Also presence's connection, which announces the leaves while closing.
        writer = self._blocking
        if writer is None:
            with self._lock:
                writer = self._blocking
                if writer is None:
                    writer = self._blocking = BlockingWriter(
                        self.path,
                        timeout=self.timeout,
                        expiry=self.expiry,
                        capacity_of=self.get_capacity,
                        create=self.create_storage,
                    )
        return writer

    def send_blocking(self, channel: str, message: Message) -> int | None:
        """Send to *channel* from code with no event loop (any thread); may raise ChannelFull.

        Uses a plain ``sqlite3`` connection: no event loop, no thread hop. Returns 1 or 0
        for a process-specific channel whose process is registered or not, None for a
        plain channel (a queue any process may receive from).
        """
        self.require_valid_message(message)
        self.require_valid_channel_name(channel)
        payload = self._codec.encode(message)
        owner = self._owner(channel)
        told = self._blocking_writer().send(channel, owner, payload)
        return min(told, 1) if owner else None

    def group_send_blocking(self, group: str, message: Message) -> int:
        """Send *message* to *group* from code with no event loop (any thread).

        Returns how many members (in every process) the group had when it was stored.
        """
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        policy = self.history_policies.lookup(group)
        if policy is not None:
            check_stream_message(group, message)
        payload = self._codec.encode(message)

        def stream_payload(offset: int, epoch: str) -> bytes:  # for plain-named members
            return self._codec.encode(stream_message(message, group, offset, epoch))

        members, dropped = self._blocking_writer().group_send(
            group, payload, policy, stream_payload
        )
        self.count_drops(group, dropped)
        return members

    def sync_send(self, channel: str, message: Message) -> None:
        """Deprecated: use :meth:`send_blocking` (or ``chanlite.sync``)."""
        _deprecated("sync_send", "send_blocking")
        self.send_blocking(channel, message)

    def sync_group_send(self, group: str, message: Message) -> None:
        """Deprecated: use :meth:`group_send_blocking` (or ``chanlite.sync``)."""
        _deprecated("sync_group_send", "group_send_blocking")
        self.group_send_blocking(group, message)

    def sync_broadcast(
        self, group: str, *, text: str | None = None, bytes: bytes | None = None
    ) -> None:
        """Deprecated: use ``chanlite.sync.SyncSender(layer_url).broadcast(...)``."""
        _deprecated("sync_broadcast", "chanlite.sync.broadcast")
        self.group_send_blocking(group, broadcast_event(text=text, bytes=bytes))

    # -- history and presence (chanlite_sqlite.history, chanlite_sqlite.presence) -------------

    def _streams_reader(self) -> HistoryReader:
        self._after_fork()
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        reader = self._reader
        if reader is None:
            reader = HistoryReader(self.path, timeout=self.timeout, codec=self._codec)
            self._reader = reader
        return reader

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The messages of history group *group* after *since* (see BaseLayer.history).

        Read from one snapshot of the file, off the event loop; raises HistoryGap rather
        than return a partial history, DatabaseFileError if the file cannot be read.
        """
        policy = self.require_history(group)
        if since is not None:
            check_position(since)
        check_limit(limit)
        reader = self._streams_reader()
        events, position = await asyncio.to_thread(reader.read, group, since, limit, policy.ttl)
        return HistoryPage(events, position)

    async def stream_position(self, group: str) -> StreamPosition:
        """The position of history group *group* (its epoch is made and kept in the file)."""
        policy = self.require_history(group)
        reader = self._streams_reader()
        return await asyncio.to_thread(reader.position, group, policy.ttl)

    async def presence_join(self, group: str, channel: str, key: str, meta: dict[str, Any]) -> None:
        """Announce *channel* in *group* as *key* with *meta*; the members get the diff."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        check_presence(key, meta, self._codec.encode)
        stored = encode_meta(self._codec, meta)
        await self._start()  # registered first: entries belong to a live process
        await self._presence_writer.submit(Join(group, channel, key, stored))
        with self._lock:
            self._present[group, channel] = (key, stored)

    async def presence_leave(self, group: str, channel: str) -> None:
        """Remove *channel*'s presence in *group* (no error if absent); members get the diff."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._start()
        await self._presence_writer.submit(Leave(group, channel))
        with self._lock:
            self._present.pop((group, channel), None)

    async def presence(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """key -> metas (each with ``"ref"``) of *group*, across every process."""
        self.require_valid_group_name(group)
        reader = self._streams_reader()
        rows = await asyncio.to_thread(
            reader.query,
            "SELECT channel, key, meta FROM chanlite_presence WHERE grp = ? ORDER BY key, channel",
            (group,),
        )
        return listing(self._codec, rows)

    def _own_presence(self) -> dict[tuple[str, str], Entry]:
        # Watcher thread: what to announce again if this process was presumed dead
        # (nothing once closing: its leaves are announced).
        with self._lock:
            return {} if self._closed else dict(self._present)

    # -- lifecycle ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Drop every message and membership in the file, and this process's queued ones."""
        writer = await self._start()
        await writer.call(Flush(None))
        self._demux.clear()
        self._inbox.clear()
        with self._lock:
            self._joined.clear()
            self._present.clear()
        self._plain.clear()

    async def close(self) -> None:
        """Unregister this process (its memberships and inbox go), stop the reader thread."""
        if self._closed:
            return
        self._closed = True
        starting = self._starting
        if starting is not None and not starting.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)  # then release what it opened
        await self._demux.close()
        if self._writer is not None and self._present:
            # Announce this process's leaves now rather than after presence_timeout.
            with contextlib.suppress(Exception):
                await self._presence_writer.submit(LeaveOwned(self.client_id))
        moving = self._moving
        if moving is not None and not moving.done():
            moving.set_exception(RuntimeError(f"{self!r} is closed"))
        writer, db, watcher = self._writer, self._db, self._watcher
        self._writer = self._db = self._watcher = None
        if writer is not None:
            await writer.drained()
            db = writer.db
            with contextlib.suppress(Exception):  # the file may be lost for good
                # A new one if the file was replaced (even with nothing written since) or
                # a loop took over.
                db = await writer.current_connection()
        if watcher is not None:
            # Before unregistering: a heartbeat that finds the registration gone would take
            # this process for one presumed dead and register it again.
            watcher.stop()
            await asyncio.get_running_loop().run_in_executor(None, watcher.join, 5)
        if db is not None:
            try:
                await db.execute("BEGIN IMMEDIATE")
                await db.execute("DELETE FROM chanlite_groups WHERE owner = ?", (self.client_id,))
                await db.execute("DELETE FROM chanlite_messages WHERE owner = ?", (self.client_id,))
                await db.execute(
                    "DELETE FROM chanlite_processes WHERE client_id = ?", (self.client_id,)
                )
                await db.execute("COMMIT")
            except Exception:  # the file may be gone or locked; heartbeat expiry cleans up
                pass
            finally:
                await db.close()
        if self._blocking is not None:
            self._blocking.close()
        if self._reader is not None:
            self._reader.close()
        self._plain.close()


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"SQLiteLayer.{old}() is deprecated; use {new}() instead",
        DeprecationWarning,
        stacklevel=3,
    )
