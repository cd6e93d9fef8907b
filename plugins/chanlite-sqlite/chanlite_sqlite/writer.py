"""The batching writer: every write of one process goes through one write connection.

Calls queue an operation and wait for its commit. A drain task runs while operations are
queued, taking everything queued so far into *one* ``BEGIN IMMEDIATE ... COMMIT``: under
load hundreds of ``group_send`` calls share a transaction (and one wake-up of the peers),
while a lone call is committed at once, with no timer adding latency.

Operations run in the order they were queued; consecutive operations of one kind are done
together (one membership query and one ``executemany`` for a run of ``group_send``).
Results are applied after the commit, in order, through :class:`Hooks`.

Before each batch the writer checks that the path still names the file it has open; if
the file was deleted or replaced it closes its connection and waits for the layer to move
the process to the new file (:meth:`Hooks.file_changed`, :meth:`Hooks.reconnect`), so a
message is never written to a file nobody else can reach.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chanlite.layers import ChannelFull, HistoryPolicy, LayerUnavailable
from chanlite_sqlite.connection import Connection, connect, resolve
from chanlite_sqlite.history import record
from chanlite_sqlite.schema import describe_error, file_identity

logger = logging.getLogger("chanlite.layers.sqlite")

MAX_BATCH = 512

# The statement committing the batch a drain task is writing, once it has started.
_FINAL: contextvars.ContextVar[list[asyncio.Future[None]]] = contextvars.ContextVar("final")

_INSERT = (
    "INSERT INTO chanlite_messages (channel, owner, grp, origin, expires, payload) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass(slots=True)
class Send:
    channel: str
    owner: str
    payload: bytes
    expires: float
    capacity: int
    future: asyncio.Future[None] | None
    full: bool = False


@dataclass(slots=True)
class GroupSend:
    group: str
    payload: bytes
    event: dict[str, Any]  # the decoded copy local members get
    expires: float
    future: asyncio.Future[None] | None
    local: list[str] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # plain-named members that were full
    full: list[str] = field(default_factory=list)  # local members that were full
    history: HistoryPolicy | None = None  # the group keeps history: give it an offset
    offset: int | None = None  # its offset and epoch, once committed
    epoch: str | None = None
    announced: bool = False  # given to Hooks.stream_writing, not yet handed over
    count: bool = False  # count the group's members (every process's) in ``members``
    members: int = 0


@dataclass(slots=True)
class GroupAdd:
    group: str
    channel: str
    owner: str
    expires: float
    future: asyncio.Future[None] | None


@dataclass(slots=True)
class GroupDiscard:
    group: str
    channel: str
    future: asyncio.Future[None] | None


@dataclass(slots=True)
class Claim:
    channel: str
    limit: int
    done: Callable[[list[bytes]], None]
    result: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class Ack:
    ids: list[int]


@dataclass(slots=True)
class Flush:
    future: asyncio.Future[None] | None


Op = Send | GroupSend | GroupAdd | GroupDiscard | Claim | Ack | Flush


class Hooks(Protocol):
    """What the writer needs from its layer."""

    client_id: str

    def get_capacity(self, channel: str) -> int: ...

    def encode_stream(self, op: GroupSend) -> bytes:
        """A history message's payload with its offset, epoch and group, for the row of a
        plain-named member (whose receiver reads nothing but the payload)."""
        ...

    def stream_writing(self, op: GroupSend) -> None:
        """*op* (to a history group) is about to get its offset."""

    def stream_abandoned(self, op: GroupSend) -> None:
        """*op*, announced to :meth:`stream_writing`, was not committed."""

    def committed_group_send(self, op: GroupSend) -> None:
        """Queue a committed group message for local members; the full ones in ``op.full``."""

    def committed_plain(self, channels: set[str]) -> None:
        """Rows were added to these plain channels: wake local receivers."""

    def peer_ports(self, owners: set[str] | None) -> list[int]:
        """UDP ports to poke: the owners' or, for None, every peer's."""

    def poke(self, ports: list[int]) -> None: ...

    async def reconnect(self) -> Connection:
        """A new write connection (once the process has moved to a replaced file)."""
        ...

    def file_changed(self) -> None:
        """The path no longer names the file the writer had open: move the process."""


class Writer:
    """Queues write operations and commits them in batches on one write connection."""

    def __init__(self, db: Connection, path: str, timeout: float, hooks: Hooks) -> None:
        self.db = db
        self.path = path
        self.timeout = timeout
        self.hooks = hooks
        self._queue: deque[Op] = deque()
        self._lock = threading.Lock()
        self._draining = False
        # The loop the drain task runs on, and a counter that retires a drain whose loop
        # went away (asgiref's async_to_sync runs each call on a fresh loop).
        self._drain_loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        # The file the connection has open, and whether it must be replaced before the
        # next write (released because the file under it was deleted or replaced).
        self.identity = file_identity(path)
        self._stale = False
        self._releases: list[concurrent.futures.Future[None]] = []

    def release_soon(self) -> concurrent.futures.Future[None]:
        """From any thread: close the connection (the file under it is gone); the next
        write opens a new one. The future is done once it is closed."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            if self._stale:  # released already (the writer noticed first)
                done.set_result(None)
                return done
            loop = self._drain_loop
            if loop is not None and loop.is_running():
                self._releases.append(done)
                if not self._draining:
                    self._draining = True
                    self._generation += 1
                    generation = self._generation
                    loop.call_soon_threadsafe(self._start_drain, loop, generation)
                return done
            # No loop is running a write: nothing uses the connection now.
            self._stale = True
        self.db.close_now()
        done.set_result(None)
        return done

    def _start_drain(self, loop: asyncio.AbstractEventLoop, generation: int) -> None:
        self._task = loop.create_task(self._drain(generation))

    def submit(self, op: Op) -> None:
        """Queue *op*; start a drain task on the running loop unless a live one is running."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._queue.append(op)
            home = self._drain_loop
            if self._draining and home is not None and (home is loop or home.is_running()):
                return
            self._draining = True
            self._drain_loop = loop
            self._generation += 1
            generation = self._generation
        self._task = loop.create_task(self._drain(generation))

    async def call(self, op: Send | GroupSend | GroupAdd | GroupDiscard | Flush) -> None:
        """Queue *op* and wait until it is committed (or failed)."""
        op.future = asyncio.get_running_loop().create_future()
        self.submit(op)
        await op.future

    async def _replace_connection(self) -> None:
        self.db.close_now()  # rolls back what it held, releasing the write lock
        self.db = await self.hooks.reconnect()
        self.identity = file_identity(self.path)
        self._stale = False

    async def current_connection(self) -> Connection:
        """The write connection, opened again first if it was released or lost."""
        if self._stale:
            await self._replace_connection()
        return self.db

    async def _release(self) -> None:
        with self._lock:
            waiting, self._releases = self._releases, []
        if not self._stale:
            self._stale = True
            with contextlib.suppress(Exception):
                await self.db.close()
        for done in waiting:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                done.set_result(None)

    async def drained(self) -> None:
        """Wait until nothing is queued or running.

        A drain left on an event loop that has stopped is taken over on this one.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if not self._draining and not self._queue:
                    return
                home = self._drain_loop
                stale = home is not None and home is not loop and not home.is_running()
                if stale:
                    self._draining = True
                    self._drain_loop = loop
                    self._generation += 1
                    generation = self._generation
            if stale:
                self._task = loop.create_task(self._drain(generation))
            await asyncio.sleep(0.001)

    async def _drain(self, generation: int) -> None:
        batch: list[Op] = []
        try:
            while True:
                if self._releases:
                    await self._release()
                with self._lock:
                    if generation != self._generation:
                        return
                    if self._releases:
                        continue
                    if not self._queue:
                        self._draining = False
                        return
                    count = min(len(self._queue), MAX_BATCH)
                    batch = [self._queue.popleft() for _ in range(count)]
                await self._run(batch)
                batch = []
        except BaseException:
            # Cancelled with its loop: fail what it held (rolled back) and let the next
            # call start a new drain.
            _fail(batch, RuntimeError("the layer's event loop stopped during the write"))
            with self._lock:
                if generation == self._generation:
                    self._draining = False
            raise

    async def _final(self, final: asyncio.Future[None]) -> None:
        """Wait for the statement that commits a batch; once started it ends (:meth:`_write`)."""
        _FINAL.get().append(final)
        await asyncio.shield(final)

    async def _write(self, batch: list[Op]) -> None:
        finals: list[asyncio.Future[None]] = []
        _FINAL.set(finals)  # this task's own: a drain on another loop has its own
        try:
            if not self._stale and self.identity != file_identity(self.path):
                # Deleted or replaced under us: writing on would reach nobody. Let go of
                # the old file and wait until the process is registered in the new one.
                self._stale = True
                with contextlib.suppress(Exception):
                    await self.db.close()
                self.hooks.file_changed()
            if self._stale:
                await self._replace_connection()
            db = self.db
            await db.rollback_open()  # left open by a drain whose loop stopped
            group_sends = [op for op in batch if isinstance(op, GroupSend)]
            if len(group_sends) < len(batch) or not await self._group_sends_fast(group_sends):
                try:
                    await db.execute("BEGIN IMMEDIATE")
                    for run in _runs(batch):
                        await self._apply(run)
                except BaseException:
                    await db.rollback_open()
                    raise
                await self._final(db.start("COMMIT"))
        except asyncio.CancelledError:
            if not finals:
                raise
            final = finals[-1]
            # The statement that commits the batch runs whatever happens to this task (its
            # loop is ending, say): learn how it ended, so what it wrote is delivered, not
            # reported as failed while stored.
            await asyncio.wait([final])
            if final.cancelled() or final.exception() is not None:
                raise
            self._committed(batch)
            batch.clear()  # settled: nothing for the caller to fail
            raise
        except sqlite3.Error as exc:
            _fail(batch, describe_error(self.path, exc, self.timeout))
            return
        except ValueError as exc:  # the connection was closed under us
            _fail(batch, RuntimeError(f"The layer is closed ({exc})"))
            return
        except LayerUnavailable as exc:  # the file could not be opened again
            _fail(batch, exc)
            return
        self._committed(batch)

    async def _run(self, batch: list[Op]) -> None:
        try:
            await self._write(batch)
        finally:
            # Messages whose offsets were announced but that were not committed (failed,
            # rolled back, cancelled): their group's other messages must not wait on them.
            for op in batch:
                if isinstance(op, GroupSend) and op.announced:
                    op.announced = False
                    self.hooks.stream_abandoned(op)

    def _committed(self, batch: list[Op]) -> None:
        hooks = self.hooks
        plain: set[str] = set()
        owners: set[str] = set()
        everyone = False
        for op in batch:
            if isinstance(op, Send):
                if op.full:
                    resolve(op.future, error=ChannelFull(op.channel))
                    continue
                if op.owner:
                    owners.add(op.owner)
                else:
                    plain.add(op.channel)
                    everyone = True
                resolve(op.future)
            elif isinstance(op, GroupSend):
                try:
                    hooks.committed_group_send(op)
                except Exception:  # the message is committed; other processes have it
                    logger.exception("Local delivery of a group message to %r failed", op.group)
                plain.update(op.plain)
                everyone = True
                resolve(op.future)
            elif isinstance(op, Claim):
                try:
                    op.done(op.result)
                except Exception:
                    logger.exception("Handing out messages claimed from %r failed", op.channel)
            elif not isinstance(op, Ack):
                resolve(op.future)
        if plain:
            hooks.committed_plain(plain)
        if everyone or owners:
            hooks.poke(hooks.peer_ports(None if everyone else owners))

    async def _apply(self, run: list[Op]) -> None:
        first = run[0]
        if isinstance(first, Send):
            await self._sends([op for op in run if isinstance(op, Send)])
        elif isinstance(first, GroupSend):
            await self._group_sends([op for op in run if isinstance(op, GroupSend)])
        elif isinstance(first, GroupAdd):
            await self.db.executemany(
                "INSERT INTO chanlite_groups (grp, channel, owner, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (grp, channel) DO UPDATE SET expires = excluded.expires, "
                "owner = excluded.owner",
                [
                    (op.group, op.channel, op.owner, op.expires)
                    for op in run
                    if isinstance(op, GroupAdd)
                ],
            )
        elif isinstance(first, GroupDiscard):
            await self.db.executemany(
                "DELETE FROM chanlite_groups WHERE grp = ? AND channel = ?",
                [(op.group, op.channel) for op in run if isinstance(op, GroupDiscard)],
            )
        elif isinstance(first, Ack):
            ids = [i for op in run if isinstance(op, Ack) for i in op.ids]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                await self.db.execute(f"DELETE FROM chanlite_messages WHERE id IN ({marks})", chunk)
        elif isinstance(first, Claim):
            for op in run:
                assert isinstance(op, Claim)
                rows = await self.db.execute_fetchall(
                    "DELETE FROM chanlite_messages WHERE id IN (SELECT id FROM chanlite_messages "
                    "WHERE channel = ? AND channel != '' AND owner = '' AND expires > ? "
                    "ORDER BY id LIMIT ?) "
                    "RETURNING id, payload",
                    (op.channel, time.time(), op.limit),
                )
                op.result = [payload for _, payload in sorted(rows)]
        elif isinstance(first, Flush):
            for table in ("messages", "groups", "history", "streams", "presence"):
                await self.db.execute(f"DELETE FROM chanlite_{table}")

    async def _backlog(self, channels: Iterable[str]) -> dict[str, int]:
        """Unexpired, unconsumed messages per channel."""
        names = list(set(channels))
        counts: dict[str, int] = {}
        now = time.time()
        for start in range(0, len(names), 500):  # stay far below SQLite's parameter limit
            chunk = names[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self.db.execute_fetchall(
                f"SELECT channel, count(*) FROM chanlite_messages WHERE channel IN ({marks}) "
                "AND channel != '' AND expires > ? GROUP BY channel",
                (*chunk, now),
            )
            counts.update((channel, count) for channel, count in rows)
        return counts

    async def _sends(self, ops: list[Send]) -> None:
        counts = await self._backlog(op.channel for op in ops)
        rows = []
        me = self.hooks.client_id
        for op in ops:
            count = counts.get(op.channel, 0)
            if count >= op.capacity:
                op.full = True
                continue
            counts[op.channel] = count + 1
            rows.append((op.channel, op.owner, "", me, op.expires, op.payload))
        if rows:
            await self.db.executemany(_INSERT, rows)

    async def _members(
        self, ops: list[GroupSend]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """``(plain members, this process's members)`` of the groups *ops* send to."""
        groups = list({op.group for op in ops})
        marks = ",".join("?" * len(groups))
        members = await self.db.execute_fetchall(
            f"SELECT grp, channel, owner FROM chanlite_groups WHERE grp IN ({marks}) "
            "AND owner IN ('', ?) AND expires > ?",
            (*groups, self.hooks.client_id, time.time()),
        )
        plain: dict[str, list[str]] = {}
        local: dict[str, list[str]] = {}
        for grp, channel, owner in members:
            (local if owner else plain).setdefault(grp, []).append(channel)
        counted = [op for op in ops if op.count]
        if counted:
            wanted = list({op.group for op in counted})
            marks = ",".join("?" * len(wanted))
            rows = await self.db.execute_fetchall(
                f"SELECT grp, count(*) FROM chanlite_groups WHERE grp IN ({marks}) "
                "AND expires > ? GROUP BY grp",
                (*wanted, time.time()),
            )
            counts: dict[str, int] = {grp: number for grp, number in rows}
            for op in counted:
                op.members = counts.get(op.group, 0)
        return plain, local

    async def _group_sends_fast(self, ops: list[GroupSend]) -> bool:
        """Group messages only, none with plain-named members: one read, one INSERT.

        The common case (broadcasts to sockets) needs no capacity counts, and a single
        multi-row INSERT is atomic by itself: two round trips to the database thread
        instead of four. Returns False, having written nothing, when it does not apply.
        """
        plain, local = await self._members(ops)
        if plain:
            return False
        me = self.hooks.client_id
        for op in ops:
            op.local = local.get(op.group, [])
        # Each statement is atomic; each message is in exactly one of them.
        others = await self._record_history(ops)
        if others:
            values = ",".join(["('', '', ?, ?, ?, ?)"] * len(others))
            params: list[object] = []
            for op in others:
                params += (op.group, me, op.expires, op.payload)
            await self._final(
                self.db.start(
                    "INSERT INTO chanlite_messages (channel, owner, grp, origin, expires, payload) "
                    f"VALUES {values}",
                    params,
                )
            )
        return True

    async def _record_history(self, ops: list[GroupSend]) -> list[GroupSend]:
        """Write the messages to history groups, giving each its offset and epoch (one
        statement); returns the other messages, not yet written."""
        streams = [op for op in ops if op.history is not None]
        if not streams:
            return ops
        # This process's members get them at commit, in offset order with other
        # processes' messages (chanlite_sqlite.ordering): its reader skips its own rows.
        me = self.hooks.client_id
        for op in streams:
            op.announced = True
            self.hooks.stream_writing(op)
        given = await record(
            self.db,
            [(op.group, me, op.expires, op.payload, op.history) for op in streams if op.history],
        )
        for op, (offset, epoch) in zip(streams, given, strict=True):
            op.offset, op.epoch = offset, epoch
        return [op for op in ops if op.history is None]

    async def _group_sends(self, ops: list[GroupSend]) -> None:
        me = self.hooks.client_id
        plain, local = await self._members(ops)
        counts = await self._backlog(c for channels in plain.values() for c in channels)
        for op in ops:
            op.local = local.get(op.group, [])
        await self._record_history(ops)
        rows = []
        for op in ops:
            if op.history is None:
                rows.append(("", "", op.group, me, op.expires, op.payload))
            members = plain.get(op.group, ())
            payload = self.hooks.encode_stream(op) if members and op.offset else op.payload
            for channel in members:
                count = counts.get(channel, 0)
                if count >= self.hooks.get_capacity(channel):
                    op.dropped.append(channel)
                    continue
                counts[channel] = count + 1
                op.plain.append(channel)
                rows.append((channel, "", "", me, op.expires, payload))
        await self.db.executemany(_INSERT, rows)


async def connect_async(path: str, timeout: float) -> Connection:
    """The write connection (see :mod:`chanlite_sqlite.connection`)."""
    return await connect(path, timeout)


def _fail(batch: Sequence[Op], error: BaseException) -> None:
    for op in batch:
        if isinstance(op, Claim):
            op.done([])
        elif not isinstance(op, Ack):
            resolve(op.future, error=error)


def _runs(batch: Sequence[Op]) -> Iterable[list[Op]]:
    """Split *batch* into runs of consecutive operations of one kind."""
    run: list[Op] = []
    for op in batch:
        if run and type(run[-1]) is not type(op):
            yield run
            run = []
        run.append(op)
    if run:
        yield run
