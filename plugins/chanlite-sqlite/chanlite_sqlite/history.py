"""History in the file: offsets from the database, an epoch per group, retention, reads.

* **Offsets.** Each history group has one ``chanlite_streams`` row. A message to it is
  written by one ``INSERT ... SELECT`` that computes its offset from that row
  (:func:`insert_history`); the row's trigger advances the stream and copies the row into
  ``chanlite_history``. One statement holds the write lock throughout, so offsets are
  unique and gapless across every process sharing the file, in commit order, and a
  killed process leaves no offset without its message. The payload is encoded once, by
  the sender, and every writer (batching or blocking) records history the same way; the
  message row carries its offset and epoch to the readers of other processes.
* **Epoch.** Made at random when a group's stream row is created. The row lives in the
  file, so a restarted server sees the same epoch and offsets, while a new or replaced
  file (or a ``flush``) starts the stream in a new epoch: a client's old position then
  gets :class:`~chanlite.layers.HistoryGap` ``"epoch"``, never somebody else's messages.
* **Retention.** ``pruned`` is the highest offset no longer kept. Each message raises it
  to ``offset - size`` (a trigger deletes the rows it passes, 64 at a time); the heartbeat
  raises it past messages older than the group's ``ttl`` and deletes the rest
  (:func:`prune`); a read skips rows at or below ``pruned``, and treats messages older
  than the ttl as pruned even before the heartbeat runs.
* **Reads** (:class:`HistoryReader`) run in one read transaction (a WAL snapshot: they never
  wait for writers) on a connection of their own, in a worker thread.
"""

from __future__ import annotations

import functools
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from chanlite.layers import (
    Codec,
    DecodeError,
    HistoryPolicy,
    StreamPosition,
    check_since,
)
from chanlite_sqlite.connection import Connection
from chanlite_sqlite.schema import PathConnection, T

#: A history message's row: its offset is the stream's last + its rank among this
#: statement's messages to the group (``coalesce``: a new stream starts at 0 in a new
#: epoch). The row trigger advances the stream and copies the row into the history. With
#: a row trigger SQLite computes every row before inserting any, so the ranks all count
#: from the same ``last``; ``ORDER BY`` keeps the queue order. One statement: atomic.
_INSERT_COLUMNS = (
    "INSERT INTO chanlite_messages "
    "(channel, owner, grp, origin, expires, payload, hoffset, epoch, hsize, httl) "
    "SELECT '', '', v.column1, v.column2, v.column3, v.column4, "
    "coalesce(s.last, 0) + v.column5, coalesce(s.epoch, v.column6), v.column7, v.column8 "
)
_INSERT_TAIL = (
    "AS v LEFT JOIN chanlite_streams AS s ON s.grp = v.column1 ORDER BY v.column9 "
    "RETURNING grp, hoffset, epoch"
)
_CREATE = (
    "INSERT INTO chanlite_streams (grp, epoch, last, pruned, ttl) VALUES (?, ?, 0, 0, ?) "
    "ON CONFLICT (grp) DO NOTHING"
)
_STREAM = "SELECT epoch, last, pruned, ttl FROM chanlite_streams WHERE grp = ?"

#: One message to a history group: ``(group, origin, expires, payload, policy)``.
Record = tuple[str, str, float, bytes, HistoryPolicy]


def new_epoch() -> str:
    """A fresh epoch: 16 random hex digits."""
    return secrets.token_hex(8)


def insert_history(records: Sequence[Record]) -> tuple[str, list[Any]]:
    """``(sql, params)`` writing *records* as group messages with their offsets; run it
    and pass what it returns to :func:`assign`."""
    params: list[Any] = []
    ranks: dict[str, int] = {}
    epochs: dict[str, str] = {}
    for index, (group, origin, expires, payload, policy) in enumerate(records):
        rank = ranks[group] = ranks.get(group, 0) + 1
        epoch = epochs.get(group)
        if epoch is None:
            epoch = epochs[group] = new_epoch()  # used only if the stream is new
        params += (group, origin, expires, payload, rank, epoch, policy.size, policy.ttl, index)
    return _insert_sql(len(records)), params


@functools.lru_cache(maxsize=64)
def _insert_sql(count: int) -> str:
    values = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count)
    return f"{_INSERT_COLUMNS}FROM (VALUES {values}) {_INSERT_TAIL}"


def assign(groups: Sequence[str], returned: Iterable[Any]) -> list[tuple[int, str]]:
    """``(offset, epoch)`` of each message, in the order of *groups* (one per message),
    from the ``(grp, hoffset, epoch)`` rows the insert returned (in any order)."""
    if len(groups) == 1:
        ((_, offset, epoch),) = returned
        return [(int(offset), str(epoch))]
    given: dict[str, list[tuple[int, str]]] = {}
    for group, offset, epoch in returned:
        given.setdefault(group, []).append((int(offset), str(epoch)))
    for offsets in given.values():
        offsets.sort(reverse=True)  # pop() from the end gives each group's in order
    return [given[group].pop() for group in groups]


async def record(db: Connection, records: Sequence[Record]) -> list[tuple[int, str]]:
    """Write *records* (one statement, atomic); ``(offset, epoch)`` of each, in order."""
    sql, params = insert_history(records)
    returned = await db.execute_fetchall(sql, params)
    return assign([r[0] for r in records], returned)


def record_blocking(conn: sqlite3.Connection, records: Sequence[Record]) -> list[tuple[int, str]]:
    """:func:`record` on a plain connection."""
    sql, params = insert_history(records)
    returned = conn.execute(sql, params).fetchall()
    return assign([r[0] for r in records], returned)


def prune(conn: sqlite3.Connection, now: float) -> None:
    """The heartbeat's retention work (in its transaction): raise ``pruned`` past every
    message older than its group's ttl, and delete the rows at or below ``pruned``.

    Sends delete pruned rows in steps of 64 (readers skip them meanwhile); this finishes
    the job. Offsets grow with time within a group, so the expired messages are its
    oldest: one short index range per group, never a scan of the whole history.
    """
    for group, pruned, ttl in conn.execute(
        "SELECT grp, pruned, ttl FROM chanlite_streams WHERE ttl IS NOT NULL AND last > pruned"
    ).fetchall():
        (newest,) = conn.execute(
            "SELECT max(pos) FROM (SELECT pos, created FROM chanlite_history "
            "WHERE grp = ? AND pos > ? ORDER BY pos) WHERE created < ?",
            (group, pruned, now - ttl),
        ).fetchone()
        if newest is not None:
            conn.execute("UPDATE chanlite_streams SET pruned = ? WHERE grp = ?", (newest, group))
    conn.execute(
        "DELETE FROM chanlite_history WHERE (grp, pos) IN (SELECT h.grp, h.pos "
        "FROM chanlite_streams AS s JOIN chanlite_history AS h "
        "ON h.grp = s.grp AND h.pos <= s.pruned)"
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
        self._db = PathConnection(path, timeout)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._db.run(work)

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
        self._db.close()
