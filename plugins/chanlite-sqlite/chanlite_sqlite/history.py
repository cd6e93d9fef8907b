"""History in the file: offsets from the database, an epoch per group, retention, reads.

* **Offsets.** Each history group has one ``chanlite_streams`` row. A writer reserves the
  next offsets of a group with one upsert inside its write transaction (``last = last +
  n ... RETURNING``), so offsets are unique and gapless across every process sharing the
  file, in commit order. The message row then carries its offset (``hoffset``) and epoch,
  and a trigger copies it into ``chanlite_history``: the payload is encoded once, by the
  sender, and every writer (batching or blocking) records history the same way.
* **Epoch.** Made at random when a group's stream row is created. The row lives in the
  file, so a restarted server sees the same epoch and offsets, while a new or replaced
  file (or a ``flush``) starts the stream in a new epoch: a client's old position then
  gets :class:`~chanlite.layers.HistoryGap` ``"epoch"``, never somebody else's messages.
* **Retention.** ``pruned`` is the highest offset no longer kept. The upsert raises it to
  ``last - size`` (a trigger deletes the rows it passes); the heartbeat raises it past
  messages older than the group's ``ttl`` (:func:`prune_expired`), and a read treats such
  messages as pruned even before that runs.
* **Reads** (:class:`HistoryReader`) run in one read transaction (a WAL snapshot: they never
  wait for writers) on a connection of their own, in a worker thread.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiosqlite

from chanlite.layers import (
    Codec,
    DecodeError,
    HistoryPolicy,
    StreamPosition,
    check_since,
)
from chanlite_sqlite.schema import describe_error, file_identity, open_database

#: Reserve offsets for a group: ``(grp, epoch if new, count, size, ttl)``.
_ADVANCE = (
    "INSERT INTO chanlite_streams (grp, epoch, last, pruned, ttl) "
    "VALUES (:grp, :epoch, :count, max(0, :count - :size), :ttl) "
    "ON CONFLICT (grp) DO UPDATE SET last = last + :count, "
    "pruned = max(pruned, last + :count - :size), ttl = :ttl "
    "RETURNING epoch, last"
)
_CREATE = (
    "INSERT INTO chanlite_streams (grp, epoch, last, pruned, ttl) VALUES (?, ?, 0, 0, ?) "
    "ON CONFLICT (grp) DO NOTHING"
)
_STREAM = "SELECT epoch, last, pruned, ttl FROM chanlite_streams WHERE grp = ?"


def new_epoch() -> str:
    """A fresh epoch: 16 random hex digits."""
    return secrets.token_hex(8)


def _advance_params(group: str, policy: HistoryPolicy, count: int) -> dict[str, Any]:
    return {
        "grp": group,
        "epoch": new_epoch(),
        "count": count,
        "size": policy.size,
        "ttl": policy.ttl,
    }


async def reserve(
    db: aiosqlite.Connection, wanted: dict[str, tuple[HistoryPolicy, int]]
) -> dict[str, tuple[str, int]]:
    """Reserve offsets in a write transaction: ``{group: (policy, n)}`` ->
    ``{group: (epoch, first offset)}``; the group's messages get ``first .. first+n-1``."""
    reserved: dict[str, tuple[str, int]] = {}
    for group, (policy, count) in wanted.items():
        rows = await db.execute_fetchall(_ADVANCE, _advance_params(group, policy, count))
        ((epoch, last),) = rows
        reserved[group] = (epoch, last - count + 1)
    return reserved


def reserve_blocking(
    conn: sqlite3.Connection, group: str, policy: HistoryPolicy
) -> tuple[int, str]:
    """Reserve one offset in a write transaction on a plain connection: (offset, epoch)."""
    epoch, last = conn.execute(_ADVANCE, _advance_params(group, policy, 1)).fetchone()
    return int(last), str(epoch)


def prune_expired(conn: sqlite3.Connection, now: float) -> None:
    """Raise ``pruned`` past every message older than its group's ttl (in a transaction).

    Offsets grow with time within a group, so the expired messages are its oldest: one
    short index range per group with a ttl, never a scan of the whole history.
    """
    streams = conn.execute(
        "SELECT grp, pruned, ttl FROM chanlite_streams WHERE ttl IS NOT NULL AND last > pruned"
    ).fetchall()
    for group, pruned, ttl in streams:
        (newest,) = conn.execute(
            "SELECT max(pos) FROM (SELECT pos, created FROM chanlite_history "
            "WHERE grp = ? AND pos > ? ORDER BY pos) WHERE created < ?",
            (group, pruned, now - ttl),
        ).fetchone()
        if newest is not None:
            conn.execute(
                "UPDATE chanlite_streams SET pruned = ? WHERE grp = ? AND pruned < ?",
                (newest, group, newest),
            )


class HistoryReader:
    """Reads history and stream positions on a connection of its own (any thread).

    The connection is reopened when the file at *path* was replaced or deleted: the
    history of the file now at the path is what a new connection would see.
    """

    def __init__(self, path: str, *, timeout: float, codec: Codec) -> None:
        self.path = path
        self.timeout = timeout
        self.codec = codec
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None

    def _open(self) -> sqlite3.Connection:
        conn = self._conn
        identity = file_identity(self.path)
        if conn is not None and identity != self._identity:
            conn.close()
            conn = self._conn = None
        if conn is None:
            conn = self._conn = open_database(self.path, self.timeout)
            self._identity = file_identity(self.path)
        return conn

    def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            conn = self._open()
            try:
                return work(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise describe_error(self.path, exc, self.timeout) from None

    def query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """The rows of one read-only statement."""
        rows: list[Any] = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return rows

    def position(self, group: str, ttl: float | None) -> StreamPosition:
        """The group's position, creating its stream (and epoch) if it has none yet."""

        def work(conn: sqlite3.Connection) -> StreamPosition:
            row = self._stream(conn, group, ttl)
            return StreamPosition(row[1], row[0])

        result: StreamPosition = self._run(work)
        return result

    def read(
        self, group: str, since: StreamPosition | None, limit: int | None, ttl: float | None
    ) -> tuple[list[dict[str, Any]], StreamPosition]:
        """``(events, position)``: as :meth:`chanlite.layers.BaseLayer.history` says.

        Raises :class:`~chanlite.layers.HistoryGap` when the messages after *since* are not
        all kept (the check and the rows come from one snapshot).
        """

        def work(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], StreamPosition]:
            self._stream(conn, group, ttl)  # make sure the stream (and its epoch) exists
            conn.execute("BEGIN")
            try:
                epoch, last, pruned, stored_ttl = conn.execute(_STREAM, (group,)).fetchone()
                position = StreamPosition(last, epoch)
                # Messages older than the ttl count as pruned before the heartbeat deletes
                # them: the reader's own ttl, or the senders' if they declared a shorter one.
                ttls = [t for t in (ttl, stored_ttl) if t is not None]
                cutoff = time.time() - min(ttls) if ttls else None
                if since is None:
                    rows = self._newest(conn, group, pruned, limit)
                else:
                    start = max(since.offset, pruned)
                    rows = (
                        conn.execute(
                            "SELECT pos, created, payload FROM chanlite_history "
                            "WHERE grp = ? AND pos > ? ORDER BY pos LIMIT ?",
                            (group, start, -1 if limit is None else limit + 1),
                        ).fetchall()
                        if since.epoch == epoch and since.offset < last
                        else []
                    )
            finally:
                conn.execute("COMMIT")
            if cutoff is not None:
                rows = [row for row in rows if row[1] >= cutoff]
            if since is not None:
                oldest = rows[0][0] if rows else None
                check_since(group, since, position, oldest)
                if limit is not None:
                    rows = rows[:limit]
            return self._decode(group, epoch, rows), position

        result: tuple[list[dict[str, Any]], StreamPosition] = self._run(work)
        return result

    @staticmethod
    def _newest(
        conn: sqlite3.Connection, group: str, pruned: int, limit: int | None
    ) -> list[tuple[int, float, bytes]]:
        if limit is None:
            return conn.execute(
                "SELECT pos, created, payload FROM chanlite_history "
                "WHERE grp = ? AND pos > ? ORDER BY pos",
                (group, pruned),
            ).fetchall()
        rows = conn.execute(
            "SELECT pos, created, payload FROM chanlite_history "
            "WHERE grp = ? AND pos > ? ORDER BY pos DESC LIMIT ?",
            (group, pruned, limit),
        ).fetchall()
        rows.reverse()
        return rows

    def _stream(
        self, conn: sqlite3.Connection, group: str, ttl: float | None
    ) -> tuple[str, int, int, float | None]:
        row = conn.execute(_STREAM, (group,)).fetchone()
        if row is None:
            # A history group nothing was sent to yet still has an epoch, kept in the
            # file: a position read now stays valid for the first messages.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_CREATE, (group, new_epoch(), ttl))
                row = conn.execute(_STREAM, (group,)).fetchone()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        epoch, last, pruned, stored_ttl = row
        return str(epoch), int(last), int(pruned), stored_ttl

    def _decode(
        self, group: str, epoch: str, rows: Iterable[tuple[int, float, bytes]]
    ) -> list[dict[str, Any]]:
        events = []
        for pos, _, payload in rows:
            try:
                event = self.codec.decode(payload)
            except DecodeError as exc:
                # A payload this codec cannot read (another key, a damaged row) cannot
                # be served; leaving it out would be a silent gap.
                raise DecodeError(
                    f"history of group {group!r} in {self.path}: the message at offset "
                    f"{pos} cannot be decoded ({exc})"
                ) from None
            event["offset"] = pos
            event["epoch"] = epoch
            event["group"] = group
            events.append(event)
        return events

    def close(self) -> None:
        """Close the connection; a later call opens it again."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
