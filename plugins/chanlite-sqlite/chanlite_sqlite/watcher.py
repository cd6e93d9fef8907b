"""The per-process reader: wake on commits, read new rows, beat the heart, trim.

One daemon thread per layer object, with its own plain ``sqlite3`` connection, so reading
and decoding never run on the event loop and never wait for it:

* **Waking.** Every process binds a UDP socket on 127.0.0.1 and records its port in
  ``chanlite_processes``; writers poke their peers' ports after each commit, so a reader
  wakes within a fraction of a millisecond and sleeps in ``select()`` otherwise. As a
  fallback (a writer that did not know us yet, a lost datagram) the thread checks
  ``PRAGMA data_version`` every ``poll_interval`` seconds: one page-cache lookup, no I/O.
* **Reading.** New rows (``id > cursor``) for this process's channels and every group
  row are read in one short transaction together with this process's members of those
  groups, decoded, and handed to the layer as ``(ack id, channels, expires, message)``.
* **Heartbeat and trimming.** Every ``heartbeat`` seconds it records that the process is
  alive and how far it has read; processes silent for ``heartbeat_timeout`` are removed
  with their memberships and inboxes; expired rows, memberships past ``group_expiry`` and
  group rows every live reader has passed are deleted, so the file stays small.
* **The file itself.** Every ``poll_interval`` it compares the path's ``(device, inode)``
  with the file it has open. A file deleted or replaced under the process would leave it
  talking to a copy nobody else can reach: it reads what was left for it, releases the
  old file (see :class:`FileEvents`), opens the path again (creating it), registers again
  with its memberships and logs one line saying so and what was lost. When the path
  cannot be opened again (its folder is gone) it logs one error and reports it as fatal.
* **Errors** of a round (a locked file, say) are logged once, and once more when a round
  succeeds again, not every round.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from chanlite.layers import DecodeError
from chanlite.layers.codec import Codec
from chanlite_sqlite.errors import DatabaseFileError
from chanlite_sqlite.ordering import StreamOrder
from chanlite_sqlite.schema import (
    describe_error,
    file_identity,
    open_database,
    remove_old_sidecars,
    sidecar_identities,
)

logger = logging.getLogger("chanlite.layers.sqlite")

#: A datagram asking the receiver to re-read the list of peers (a process started).
PEERS_CHANGED = b"p"
#: A datagram saying "something was committed".
COMMITTED = b"w"
#: A datagram asking the reader to check the file's identity now (a writer saw it change).
CHECK_FILE = b"c"
#: Longest a process keeps trying to reopen a deleted or replaced file (other processes
#: must first let go of the old one) before giving up, in heartbeats (and at least 5 s).
REOPEN_HEARTBEATS = 10
READ_BATCH = 2000


@dataclass(slots=True)
class Incoming:
    """One message for this process: which local channels, and the row to delete after."""

    ack: int | None  # row id of a direct message, deleted once consumed
    channels: tuple[str, ...]
    expires: float
    message: dict[str, Any]
    group: str  # '' for a direct message
    offset: int | None = None  # a history group's message: its place in the stream
    epoch: str = ""


Deliver = Callable[[list[Incoming]], None]


@dataclass(slots=True)
class FileEvents:
    """How the watcher tells its layer that the file under it was deleted or replaced.

    All three are called from the watcher thread.
    """

    #: Close every other connection of this process to the old file; the returned future
    #: is done once they are closed (the watcher waits for it, bounded by the timeout).
    release: Callable[[], Future[None]]
    #: The path is open and registered again: *lost* messages were left in the old file.
    reopened: Callable[[int], None]
    #: The path cannot be opened again: the error says why (logged already).
    fatal: Callable[[DatabaseFileError], None]


def _no_release() -> Future[None]:
    done: Future[None] = Future()
    done.set_result(None)
    return done


NO_FILE_EVENTS = FileEvents(_no_release, lambda lost: None, lambda error: None)


class Watcher(threading.Thread):
    """Reads this process's messages from the database and keeps its registration alive."""

    def __init__(
        self,
        path: str,
        client_id: str,
        *,
        timeout: float,
        poll_interval: float,
        heartbeat: float,
        heartbeat_timeout: float,
        deliver: Deliver,
        order: StreamOrder,
        codec: Codec,
        changed: Callable[[], None],
        memberships: Callable[[], list[tuple[str, str, float]]] = list,
        on_beat: Callable[[sqlite3.Connection, float, bool], bool] | None = None,
        file_events: FileEvents = NO_FILE_EVENTS,
        create: bool = True,
    ) -> None:
        super().__init__(name=f"chanlite-sqlite-{client_id}", daemon=True)
        self.path = path
        self.client_id = client_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.heartbeat_timeout = heartbeat_timeout
        self._deliver = deliver
        self._codec = codec
        self._changed = changed
        self._memberships = memberships
        # The layer's: its reads tell it when a gap below an own message is final.
        self._order = order
        self._on_beat = on_beat
        self._file_events = file_events
        self._create = create  # the file may be created (a lost one is recreated anyway)
        #: Whether opening the path created the file.
        self.created = False
        #: ``(device, inode)`` of the file the connection has open, and of its -wal/-shm.
        self.identity: tuple[int, int] | None = None
        self._sidecars: dict[str, tuple[int, int] | None] = {}
        #: How many times the file was found deleted or replaced and opened again.
        self.reopened = 0
        self._failing = ""  # the error of the last failed round, logged once
        self._moved = False  # registered in a new file: the next beat restores the rest
        self.ready: Future[None] = Future()
        self.cursor = 0
        #: client_id -> UDP port of every other live process (replaced, never mutated).
        self.peers: dict[str, int] = {}
        self._stopping = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self._conn: sqlite3.Connection | None = None
        self._data_version = -1

    # -- called from other threads --------------------------------------------------

    def poke(self, ports: Sequence[int]) -> None:
        """Tell the processes listening on *ports* that something was committed."""
        # Errors mean a dead peer, or a full buffer (then that reader is awake anyway).
        for port in ports:
            with contextlib.suppress(OSError):
                self._sock.sendto(COMMITTED, ("127.0.0.1", port))

    def check_file(self) -> None:
        """Ask the thread to compare the path with its open file now."""
        with contextlib.suppress(OSError):
            self._sock.sendto(CHECK_FILE, ("127.0.0.1", self.port))

    def stop(self) -> None:
        """Ask the thread to finish; it wakes at once."""
        self._stopping.set()
        self.poke([self.port])

    # -- the thread -----------------------------------------------------------------

    def run(self) -> None:
        try:
            self._open()
        except BaseException as exc:
            with contextlib.suppress(InvalidStateError):
                self.ready.set_exception(exc)
            self._close()
            return
        try:
            self.ready.set_result(None)
        except InvalidStateError:  # whoever started us stopped waiting (its loop ended)
            self._unregister()
            self._close()
            return
        try:
            self._loop()
        finally:
            self._close()

    def _open(self, restore: bool = False) -> int:
        """Open the path and register; returns the memberships put back (*restore*)."""
        existed = os.path.lexists(self.path)
        self._conn = open_database(self.path, self.timeout, self._create or restore)
        self.created = self.created or not existed
        self.identity = file_identity(self.path)
        try:
            restored = self._register(restore)
        except sqlite3.Error as exc:  # read-only or locked: say so, not sqlite3's words
            raise describe_error(self.path, exc, self.timeout) from None
        self._sidecars = sidecar_identities(self.path)
        return restored

    def _unregister(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            remove_process(conn, self.client_id)
            conn.execute("COMMIT")
        except sqlite3.Error:
            pass  # the heartbeat timeout removes it instead

    def _loop(self) -> None:
        next_beat = time.monotonic() + self.heartbeat
        next_check = time.monotonic() + self.poll_interval
        while not self._stopping.is_set():
            wait = max(0.0, min(self.poll_interval, next_beat - time.monotonic()))
            readable, _, _ = select.select([self._sock], [], [], wait)
            poked = refresh = check = False
            if readable:
                poked = True
                refresh, check = self._drain_socket()
            if self._stopping.is_set():
                return
            try:
                if check or time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.poll_interval
                    if file_identity(self.path) != self.identity and not self._reopen():
                        return
                if refresh:
                    self._load_peers()
                self._read_if_changed(poked)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat
                    self._beat()
            except sqlite3.Error as exc:
                # A locked or busy file is retried on the next round; nothing is lost,
                # the cursor only moves after a successful read.
                self._failed(str(describe_error(self.path, exc, self.timeout)), None)
            except Exception as exc:
                self._failed(f"chanlite-sqlite reader for {self.path} failed: {exc!r}", exc)
            else:
                if self._failing:
                    self._failing = ""
                    logger.warning("Channel layer database %s is usable again", self.path)

    def _failed(self, message: str, exc: Exception | None) -> None:
        # One line when the rounds start failing (and one when they recover), not one per
        # round: a file that stays locked must not fill the log.
        if message == self._failing:
            return
        first = not self._failing
        self._failing = message
        if first:
            logger.error("%s; retrying until it works", message, exc_info=exc)
        else:
            logger.error("%s", message, exc_info=exc)

    # -- the file deleted or replaced -------------------------------------------------

    def _reopen(self) -> bool:
        """The path no longer names the file we have open: move to the new one.

        Returns False when that is impossible (logged, reported as fatal).
        """
        gone = file_identity(self.path) is None
        # A new file may be another process's doing after a delete: say both.
        what = "deleted" if gone else "deleted or replaced"
        lost = self._salvage()
        # Nothing of this process may write to the old file any more (nobody would read
        # it), and the new file must not share the old one's -wal and -shm.
        with contextlib.suppress(Exception):
            self._file_events.release().result(self.timeout)
        remove_old_sidecars(self.path, self._sidecars)
        if self._conn is not None:
            self._conn.close()  # SQLite neither checkpoints nor deletes a moved file's log
            self._conn = None
        try:
            restored = self._open_again()
        except DatabaseFileError as exc:
            if self._stopping.is_set():
                return False  # the layer is closing: nothing to report
            logger.error(
                "Channel layer database %s was %s while in use and cannot be opened again "
                "(%s) This process cannot reach the others: stopping it.",
                self.path,
                what,
                exc,
            )
            self._file_events.fatal(exc)
            return False
        self.reopened += 1
        self._moved = True
        logger.warning(
            "Channel layer database %s was %s while in use; opened the path again and "
            "registered this process with its %d group membership%s; %d message%s left in "
            "the old file for other processes could not be delivered and %s lost",
            self.path,
            what,
            restored,
            "" if restored == 1 else "s",
            lost,
            "" if lost == 1 else "s",
            "is" if lost == 1 else "are",
        )
        self._file_events.reopened(lost)
        return True

    def _salvage(self) -> int:
        """Read what the old file still holds for us; count what it holds for nobody else.

        Messages for our channels and groups are delivered as usual. Plain-channel rows
        (shared queues) and direct messages for processes that are no longer alive reach
        nobody: they are counted as lost. (Other live processes read their own rows when
        they notice the change themselves.)
        """
        conn = self._conn
        if conn is None:
            return 0
        try:
            while self._read_batch() == READ_BATCH:
                pass
            alive = time.time() - self.heartbeat_timeout
            (lost,) = conn.execute(
                "SELECT count(*) FROM chanlite_messages WHERE channel != '' AND owner != ? "
                "AND expires > ? AND owner NOT IN (SELECT client_id FROM chanlite_processes "
                "WHERE heartbeat > ? AND client_id != ?)",
                (self.client_id, time.time(), alive, self.client_id),
            ).fetchone()
            return int(lost)
        except sqlite3.Error as exc:
            logger.warning("Could not read what was left in the old %s: %s", self.path, exc)
            return 0

    def _open_again(self) -> int:
        """Open the path (creating the file) and register again; retried while other
        processes still hold the old file. Raises :class:`DatabaseFileError`."""
        folder = os.path.dirname(os.path.abspath(self.path))
        deadline = time.monotonic() + max(5.0, REOPEN_HEARTBEATS * self.heartbeat)
        pause = 0.01
        while True:
            if not os.path.isdir(folder):
                raise DatabaseFileError(
                    f"Channel layer database {self.path} cannot be created: its folder "
                    f"{folder} is gone."
                )
            try:
                return self._open(restore=True)
            except DatabaseFileError:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                if time.monotonic() + pause > deadline or self._stopping.is_set():
                    raise
            self._stopping.wait(pause)
            pause = min(pause * 2, 0.25)

    def _drain_socket(self) -> tuple[bool, bool]:
        refresh = check = False
        while True:
            try:
                data = self._sock.recv(16)
            except OSError:  # BlockingIOError: nothing more to read
                return refresh, check
            if data == PEERS_CHANGED:
                refresh = True
            elif data == CHECK_FILE:
                check = True

    def _read_if_changed(self, poked: bool) -> None:
        assert self._conn is not None
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version and not poked:
            return
        self._data_version = version
        self._changed()
        mark = self._order.mark()  # before the read's snapshot (see chanlite_sqlite.ordering)
        while self._read_batch() == READ_BATCH:
            pass
        self._order.caught_up(mark)

    def _read_batch(self) -> int:
        conn = self._conn
        assert conn is not None
        me = self.client_id
        conn.execute("BEGIN")
        try:
            rows = conn.execute(
                "SELECT id, channel, grp, expires, payload, hoffset, epoch FROM chanlite_messages "
                "WHERE id > ? AND origin != ? AND (owner = ? OR grp != '') "
                "ORDER BY id LIMIT ?",
                (self.cursor, me, me, READ_BATCH),
            ).fetchall()
            if len(rows) < READ_BATCH:
                # Everything up to the last id is visible in this snapshot: rows we skip
                # (our own, other processes') count as passed, so group rows can be trimmed.
                (last,) = conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM sqlite_sequence "
                    "WHERE name = 'chanlite_messages'"
                ).fetchone()
            else:
                last = rows[-1][0]
            groups = {row[2] for row in rows if row[2]}
            members: dict[str, list[str]] = {}
            if groups:
                now = time.time()
                marks = ",".join("?" * len(groups))
                # One row per group, its channels joined by SQLite: a group of hundreds
                # of local members costs one string split, not one Python row each.
                # (Channel names never contain a comma.)
                for grp, channels in conn.execute(
                    f"SELECT grp, group_concat(channel, ',') FROM chanlite_groups "
                    f"WHERE owner = ? AND grp IN ({marks}) AND expires > ? GROUP BY grp",
                    (me, *groups, now),
                ):
                    members[grp] = channels.split(",")
        finally:
            conn.execute("COMMIT")
        self.cursor = max(self.cursor, last)
        if not rows:
            return 0
        batch: list[Incoming] = []
        for row_id, channel, grp, expires, payload, offset, epoch in rows:
            if grp:
                local = members.get(grp)
                if not local:
                    if offset is not None:  # nobody here, but it takes its place in order
                        batch.append(Incoming(None, (), expires, {}, grp, offset, epoch))
                    continue
                channels, ack = tuple(local), None
            else:
                channels, ack = (channel,), row_id
            try:
                message = self._codec.decode(payload)
            except DecodeError as exc:
                logger.error("Skipping undecodable message %d in %s: %s", row_id, self.path, exc)
                continue
            if offset is not None:  # a history group's message: where it is in the stream
                message["offset"] = offset
                message["epoch"] = epoch
                message["group"] = grp
            batch.append(Incoming(ack, channels, expires, message, grp, offset, epoch or ""))
        if batch:
            self._deliver(batch)
        return len(rows)

    # -- registration and housekeeping ------------------------------------------------

    def _register(self, restore: bool = False) -> int:
        """Register this process; returns how many memberships were put back.

        *restore* (the file was deleted or replaced): put back the memberships this
        process made, and read the file from its start, since every row in it was
        written after we lost the old one.
        """
        conn = self._conn
        assert conn is not None
        restored = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            if restore:
                self.cursor = 0
            else:
                row = conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'chanlite_messages'"
                ).fetchone()
                self.cursor = int(row[0]) if row else 0
            self._upsert_process(conn)
            if restore:
                restored = self._restore_memberships(conn, time.time())
                self._hold_places(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        self._load_peers()
        for port in self.peers.values():
            with contextlib.suppress(OSError):
                self._sock.sendto(PEERS_CHANGED, ("127.0.0.1", port))
        return restored

    def _hold_places(self, conn: sqlite3.Connection) -> None:
        # The processes we knew in the old file move here too, each when it notices. Until
        # then a row with cursor 0 stands for each, so that no heartbeat trims the group
        # messages written here before it arrives (it reads this file from its start), and
        # so that writers here wake it. One that never comes is removed as dead, after
        # heartbeat_timeout, like any silent process.
        conn.executemany(
            "INSERT INTO chanlite_processes (client_id, pid, wake_port, heartbeat, cursor) "
            "VALUES (?, 0, ?, ?, 0) ON CONFLICT (client_id) DO NOTHING",
            [(client_id, port, time.time()) for client_id, port in self.peers.items()],
        )

    def _restore_memberships(self, conn: sqlite3.Connection, now: float) -> int:
        # The memberships this process made for its own channels, unexpired.
        rows = [
            (group, channel, self.client_id, expires)
            for group, channel, expires in self._memberships()
            if expires > now
        ]
        conn.executemany(
            "INSERT INTO chanlite_groups (grp, channel, owner, expires) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (grp, channel) DO NOTHING",
            rows,
        )
        return len(rows)

    def _upsert_process(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO chanlite_processes (client_id, pid, wake_port, heartbeat, cursor) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET "
            "heartbeat = excluded.heartbeat, cursor = excluded.cursor",
            (self.client_id, os.getpid(), self.port, time.time(), self.cursor),
        )

    def _load_peers(self) -> None:
        assert self._conn is not None
        self.peers = dict(
            self._conn.execute(
                "SELECT client_id, wake_port FROM chanlite_processes "
                "WHERE client_id != ? AND wake_port > 0",
                (self.client_id,),
            ).fetchall()
        )

    def _beat(self) -> None:
        conn = self._conn
        assert conn is not None
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            updated = conn.execute(
                "UPDATE chanlite_processes SET heartbeat = ?, cursor = ? WHERE client_id = ?",
                (now, self.cursor, self.client_id),
            ).rowcount
            if not updated:
                logger.warning(
                    "chanlite-sqlite process %s was presumed dead (no heartbeat for %g s); "
                    "registering again and restoring its group memberships",
                    self.client_id,
                    self.heartbeat_timeout,
                )
                self._upsert_process(conn)
                # Others removed our memberships with our registration: put them back.
                self._restore_memberships(conn, now)
            # Other modules' heartbeat work (presence sweeps, history ttl), before dead
            # processes go: True if it wrote messages every process must read.
            # (restored: registered again, after a presumed death or in a new file).
            restored = not updated or self._moved
            wrote = self._on_beat(conn, now, restored) if self._on_beat is not None else False
            dead = [
                client_id
                for (client_id,) in conn.execute(
                    "SELECT client_id FROM chanlite_processes WHERE heartbeat < ?",
                    (now - self.heartbeat_timeout,),
                )
            ]
            for client_id in dead:
                remove_process(conn, client_id)
            if dead:
                logger.info("Removed dead chanlite-sqlite processes %s", ", ".join(dead))
            trim(conn, now)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._moved = False
        self._load_peers()
        if wrote:  # this process's own reader included: a commit here bumps no data_version
            self.poke([*self.peers.values(), self.port])

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._sock.close()


def remove_process(conn: sqlite3.Connection, client_id: str) -> None:
    """Delete a process's registration, memberships and unread messages."""
    conn.execute("DELETE FROM chanlite_groups WHERE owner = ?", (client_id,))
    conn.execute("DELETE FROM chanlite_messages WHERE owner = ?", (client_id,))
    conn.execute("DELETE FROM chanlite_processes WHERE client_id = ?", (client_id,))


def trim(conn: sqlite3.Connection, now: float) -> None:
    """Delete expired rows and group messages that every registered reader has passed."""
    # Group rows first: a rowid range, cheap, and most of the table under group traffic;
    # the expiry scan that follows then only visits what is left.
    conn.execute(
        "DELETE FROM chanlite_messages WHERE grp != '' "
        "AND id <= (SELECT min(cursor) FROM chanlite_processes)"
    )
    conn.execute("DELETE FROM chanlite_messages WHERE expires <= ?", (now,))
    conn.execute("DELETE FROM chanlite_groups WHERE expires <= ?", (now,))
