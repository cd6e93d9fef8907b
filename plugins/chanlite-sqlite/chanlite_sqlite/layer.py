"""``sqlite:///path.db``: one channel layer shared by every process that opens the file.

Each :class:`SQLiteLayer` object is one *process* of the layer (its ``client_id``):

* channels made by :meth:`~SQLiteLayer.new_channel` are local to it; a direct message from
  another process is one row addressed to it; one from itself never touches the file;
* a group message is **one** row; every process reads it and delivers it to its own
  members as one ``(members, message)`` item of :meth:`~SQLiteLayer.receive_local`;
* plain channel names (``"chat"``) are shared queues any process may ``receive`` from.

Writes are batched (see :mod:`chanlite_sqlite.writer`); reading, waking, heartbeats and
trimming happen in one thread per layer object (see :mod:`chanlite_sqlite.watcher`).
Code without an event loop can use :meth:`SQLiteLayer.sync_send` and friends
(see :mod:`chanlite_sqlite.sync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from os import PathLike, fspath
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import aiosqlite

from chanlite.broadcast import BROADCAST
from chanlite.layers.base import (
    BaseLayer,
    ChannelFull,
    LayerConfigError,
    Message,
    release_pending,
)
from chanlite.layers.demux import LocalDemux
from chanlite_sqlite import codec
from chanlite_sqlite.plain import PlainReceivers
from chanlite_sqlite.sync import SyncSender
from chanlite_sqlite.watcher import Incoming, Watcher
from chanlite_sqlite.writer import (
    Ack,
    Flush,
    GroupAdd,
    GroupDiscard,
    GroupSend,
    Send,
    Writer,
    resolve,
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
    chanlite database) are :class:`~chanlite_sqlite.schema.DatabaseFileError` naming it.
    """

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
        self._db: aiosqlite.Connection | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        # Messages for local channels: (expires, channels, message, ack row id).
        self._lock = threading.Lock()
        self._inbox: deque[tuple[float, tuple[str, ...], Message, int | None]] = deque()
        self._pending: dict[str, int] = {}
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._demux = LocalDemux(self.receive_local)
        self._plain = PlainReceivers(lambda: self._writer)
        self._sync: SyncSender | None = None
        self._pid = os.getpid()
        # (group, local channel) -> membership expiry, as this process added them.
        self._joined: dict[tuple[str, str], float] = {}

    def _after_fork(self) -> None:
        # A layer made before a fork (a pre-fork server importing the app) must not share
        # its client_id with its siblings: each process gets its own, before first use.
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._sync = None  # an sqlite3 connection must not cross a fork
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
        task = self._starting
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
        watcher = Watcher(
            self.path,
            self.client_id,
            timeout=self.timeout,
            poll_interval=self.poll_interval,
            heartbeat=self.heartbeat,
            heartbeat_timeout=self.heartbeat_timeout,
            deliver=self._deliver_incoming,
            changed=self._plain.remote_change,
            memberships=self._own_memberships,
        )
        watcher.start()
        db: aiosqlite.Connection | None = None
        try:
            await asyncio.wrap_future(watcher.ready)
            db = aiosqlite.connect(self.path, timeout=self.timeout, isolation_level=None)
            # A layer that is never closed (Channels never closes its layers) must not
            # keep the interpreter from exiting; the watcher thread is a daemon too.
            thread = getattr(db, "_thread", None)
            if isinstance(thread, threading.Thread):
                thread.daemon = True
            await db
            await db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            watcher.stop()
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            raise
        self._watcher, self._db = watcher, db
        self._writer = Writer(db, self.path, self.timeout, self)

    # -- writer hooks ---------------------------------------------------------------------

    def committed_group_send(self, op: GroupSend) -> None:
        """Deliver a committed group message to this process's members (one item)."""
        for channel in op.dropped:
            self.count_drop(op.group, channel)
        if op.local:
            self._deliver_local(op.local, codec.decode(op.payload), op.expires, None, op.group)

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

    # -- local delivery (any thread) ---------------------------------------------------

    def _deliver_incoming(self, batch: list[Incoming]) -> None:
        # Called by the watcher thread with messages other processes wrote for us.
        with self._lock:
            self._expire_local(time.time())
            for item in batch:
                self._enqueue(item.channels, item.message, item.expires, item.ack, item.group)
            waiter = self._inbox_waiter
        if waiter is not None:
            resolve(waiter)

    def _deliver_local(
        self,
        channels: Sequence[str],
        message: Message,
        expires: float,
        ack: int | None,
        group: str,
    ) -> bool:
        """Queue one item for local *channels*; full ones are dropped (counted for groups)."""
        with self._lock:
            self._expire_local(time.time())
            queued = self._enqueue(channels, message, expires, ack, group)
            waiter = self._inbox_waiter
        if queued and waiter is not None:
            resolve(waiter)
        return queued

    def _enqueue(
        self,
        channels: Sequence[str],
        message: Message,
        expires: float,
        ack: int | None,
        group: str,
    ) -> bool:
        # Holding self._lock.
        pending = self._pending
        accepted = []
        for channel in channels:
            if pending.get(channel, 0) >= self.get_capacity(channel):
                if group:
                    self.count_drop(group, channel)
            else:
                accepted.append(channel)
        if not accepted:
            if ack is not None:
                # The sender saw room in the file, but group messages fill the channel
                # here. The row stays (counting against the channel) until it expires.
                logger.warning(
                    "Direct message to %r dropped: the channel is full (capacity %d)",
                    channels[0],
                    self.get_capacity(channels[0]),
                )
            return False
        for channel in accepted:
            pending[channel] = pending.get(channel, 0) + 1
        self._inbox.append((expires, tuple(accepted), message, ack))
        return True

    def _expire_local(self, now: float) -> None:
        # Expired rows left in the file are trimmed by the heartbeat; no ack needed.
        inbox = self._inbox
        while inbox and inbox[0][0] <= now:
            self._release(inbox.popleft()[1])

    def _release(self, channels: tuple[str, ...]) -> None:
        release_pending(self._pending, channels)

    # -- direct messages -------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue *message* on *channel*; raise :class:`ChannelFull` at capacity."""
        self.require_valid_message(message)
        self.require_valid_channel_name(channel)
        payload = codec.encode(message)
        now = time.time()
        if self.is_local(channel):
            # Our own channel: straight into the inbox, the file is not involved.
            if not self._deliver_local(
                (channel,), codec.decode(payload), now + self.expiry, None, ""
            ):
                raise ChannelFull(channel)
            return
        writer = await self._start()
        owner = self._owner(channel)
        await writer.call(
            Send(channel, owner, payload, now + self.expiry, self.get_capacity(channel), None)
        )

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
        writer = await self._start()
        loop = asyncio.get_running_loop()
        while True:
            acks: list[int] = []
            found = None
            with self._lock:
                now = time.time()
                inbox = self._inbox
                while inbox:
                    expires, channels, message, ack = inbox.popleft()
                    self._release(channels)
                    if ack is not None:
                        acks.append(ack)
                    if expires > now:
                        found = channels, message
                        break
                waiter = None
                if found is None:
                    waiter = self._inbox_waiter = loop.create_future()
            if acks:
                writer.submit(Ack(acks))
            if found is not None:
                return found
            assert waiter is not None
            try:
                await waiter
            finally:
                with self._lock:
                    if self._inbox_waiter is waiter:
                        self._inbox_waiter = None

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
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        payload = codec.encode(message)
        writer = await self._start()
        await writer.call(GroupSend(group, payload, time.time() + self.expiry, None))

    # -- sync API -----------------------------------------------------------------------------

    def _sync_sender(self) -> SyncSender:
        self._after_fork()
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        sender = self._sync
        if sender is None:
            with self._lock:
                sender = self._sync
                if sender is None:
                    sender = self._sync = SyncSender(self)
        return sender

    def sync_send(self, channel: str, message: Message) -> None:
        """Send to *channel* from code with no event loop (any thread); may raise ChannelFull.

        Uses a plain ``sqlite3`` connection: no event loop, no thread hop.
        """
        self.require_valid_message(message)
        self.require_valid_channel_name(channel)
        self._sync_sender().send(channel, self._owner(channel), codec.encode(message))

    def sync_group_send(self, group: str, message: Message) -> None:
        """Send *message* to *group* from code with no event loop (any thread)."""
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        self._sync_sender().group_send(group, codec.encode(message))

    def sync_broadcast(
        self, group: str, *, text: str | None = None, bytes: bytes | None = None
    ) -> None:
        """Have every member socket of *group* sent one frame (chanlite's broadcast event)."""
        if (text is None) == (bytes is None):
            raise TypeError("sync_broadcast() takes exactly one of text= or bytes=")
        event: Message = {"type": BROADCAST}
        if text is not None:
            event["text"] = text
        else:
            event["bytes"] = bytes
        self.sync_group_send(group, event)

    # -- lifecycle ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Drop every message and membership in the file, and this process's queued ones."""
        writer = await self._start()
        await writer.call(Flush(None))
        with self._lock:
            self._inbox.clear()
            self._pending.clear()
            self._joined.clear()
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
        writer, db, watcher = self._writer, self._db, self._watcher
        self._writer = self._db = self._watcher = None
        if writer is not None:
            await writer.drained()
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
        if watcher is not None:
            watcher.stop()
            await asyncio.get_running_loop().run_in_executor(None, watcher.join, 5)
        if self._sync is not None:
            self._sync.close()
        self._plain.close()
