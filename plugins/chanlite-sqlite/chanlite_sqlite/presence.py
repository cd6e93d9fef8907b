"""Presence in the file: one row per (group, connection channel), owned by its process.

* **Joins and leaves** are queued to :class:`PresenceWriter`, which writes everything
  queued as one transaction in a worker thread (:func:`apply_changes`): the rows and key
  counts it touches are read in two queries, each change is worked out in order, and one
  ``presence.diff`` per change goes to the group as an ordinary group message in the same
  transaction, so the listing and the diffs never disagree and every process's members
  (this process's too) get them by the normal group delivery.
* **Liveness.** A process's entries live as long as its heartbeat in ``chanlite_processes``
  (refreshed at least every third of ``presence_timeout``). On each heartbeat every live
  process runs :meth:`Sweeper.sweep`: entries of a process silent for ``presence_timeout``
  (or no longer registered at all) are deleted and their leave diffs sent, in one
  transaction, so exactly one process announces each leave. A process that was only
  presumed dead (paused past the timeout) puts its entries back, announcing them again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chanlite.layers import Codec, DecodeError, presence_diff, with_ref
from chanlite_sqlite.blocking import BlockingWriter
from chanlite_sqlite.connection import resolve

logger = logging.getLogger("chanlite.layers.sqlite")

#: The event type presence metas are stored under (the codec stores events).
_STORED = "presence.meta"
_CHUNK = 300  # row-value pairs per query: far below SQLite's parameter limit

Entry = tuple[str, bytes]  # (key, stored meta)


@dataclass(slots=True)
class Join:
    group: str
    channel: str
    key: str
    stored: bytes  # the meta as stored (see encode_meta)


@dataclass(slots=True)
class Leave:
    group: str
    channel: str


@dataclass(slots=True)
class LeaveOwned:
    """Every entry of one process (its layer is closing)."""

    owner: str


def encode_meta(codec: Codec, meta: dict[str, Any]) -> bytes:
    """*meta* as stored: wrapped in an event, since the codec stores events."""
    return codec.encode({"type": _STORED, "meta": meta})


def decode_meta(codec: Codec, stored: bytes) -> dict[str, Any]:
    """The meta dict of a stored entry ({} for a row this codec cannot read, logged)."""
    try:
        meta = codec.decode(stored).get("meta")
    except DecodeError as exc:
        logger.error("Unreadable presence meta in the layer file: %s", exc)
        return {}
    return meta if isinstance(meta, dict) else {}


class _Diffs:
    """Works out a run of changes on the rows they touch, and the diffs they make."""

    def __init__(
        self,
        codec: Codec,
        rows: dict[tuple[str, str], Entry],
        counts: dict[tuple[str, str], int],
    ) -> None:
        self.codec = codec
        self.rows = rows  # (group, channel) -> entry, as the changes leave it
        self.counts = counts  # (group, key) -> channels, as the changes leave it
        self.changed: set[tuple[str, str]] = set()

    def join(self, group: str, channel: str, key: str, stored: bytes) -> list[dict[str, Any]]:
        diffs = []
        previous = self.rows.get((group, channel))
        meta = with_ref(decode_meta(self.codec, stored), channel)
        if previous is not None:
            old_key, old_stored = previous
            if old_key == key:
                self._set(group, channel, (key, stored))
                old = with_ref(decode_meta(self.codec, old_stored), channel)
                return [presence_diff(group, joins={key: [meta]}, leaves={key: [old]})]
            diffs += self.leave(group, channel)
        count = self.counts.get((group, key), 0)
        self.counts[group, key] = count + 1
        self._set(group, channel, (key, stored))
        diffs.append(presence_diff(group, joins={key: [meta]}, first=not count))
        return diffs

    def leave(self, group: str, channel: str) -> list[dict[str, Any]]:
        previous = self.rows.pop((group, channel), None)
        if previous is None:
            return []
        self.changed.add((group, channel))
        key, stored = previous
        left = self.counts.get((group, key), 1) - 1
        self.counts[group, key] = left
        meta = with_ref(decode_meta(self.codec, stored), channel)
        return [presence_diff(group, leaves={key: [meta]}, last=not left)]

    def _set(self, group: str, channel: str, entry: Entry) -> None:
        self.rows[group, channel] = entry
        self.changed.add((group, channel))


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


_ROWS = "SELECT grp, channel, key, meta FROM chanlite_presence"
# Without statistics SQLite would read every entry of the group through the primary key.
_COUNTS = "SELECT grp, key, count(*) FROM chanlite_presence INDEXED BY chanlite_presence_key"
_UPSERT = (
    "INSERT INTO chanlite_presence (grp, channel, key, meta, owner) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (grp, channel) DO UPDATE SET "
    "key = excluded.key, meta = excluded.meta, owner = excluded.owner"
)


def _pairs_sql(select: str, column: str, count: int) -> str:
    """*select* for rows whose ``(grp, column)`` is one of *count* pairs (+ GROUP BY)."""
    values = ",".join(["(?, ?)"] * count)
    grouped = " GROUP BY grp, key" if select is _COUNTS else ""
    return f"{select} WHERE (grp, {column}) IN (VALUES {values}){grouped}"


def apply_changes(
    conn: sqlite3.Connection,
    changes: Sequence[Join | Leave | LeaveOwned],
    *,
    codec: Codec,
    owner: str,
    send: Callable[[dict[str, Any]], None],
) -> None:
    """Write *changes* in order inside the caller's transaction; *send* each diff.

    Reads the rows and key counts the changes touch in two queries, works the changes
    out in memory (so ``"first"``/``"last"`` are exact however they interleave), then
    writes the result.
    """
    rows: dict[tuple[str, str], Entry] = {}
    owned: dict[str, list[tuple[str, str]]] = {}
    for who in {c.owner for c in changes if isinstance(c, LeaveOwned)}:
        found = owned[who] = []
        for grp, channel, key, meta in conn.execute(
            f"{_ROWS} WHERE owner = ? ORDER BY grp, channel", (who,)
        ):
            rows[grp, channel] = (key, meta)
            found.append((grp, channel))
    pairs = list({(c.group, c.channel) for c in changes if not isinstance(c, LeaveOwned)})
    for chunk in _chunks(pairs):
        for grp, channel, key, meta in conn.execute(
            _pairs_sql(_ROWS, "channel", len(chunk)), _flat(chunk)
        ):
            rows[grp, channel] = (key, meta)
    keys = {(group, key) for (group, _), (key, _) in rows.items()}
    keys.update((c.group, c.key) for c in changes if isinstance(c, Join))
    counts = _counts(conn, keys)
    work = _Diffs(codec, rows, counts)
    for change in changes:
        if isinstance(change, Join):
            diffs = work.join(change.group, change.channel, change.key, change.stored)
        elif isinstance(change, Leave):
            diffs = work.leave(change.group, change.channel)
        else:
            diffs = [d for pair in owned[change.owner] for d in work.leave(*pair)]
        for diff in diffs:
            send(diff)
    gone = [pair for pair in work.changed if pair not in work.rows]
    kept = [(g, c, *work.rows[g, c], owner) for g, c in work.changed if (g, c) in work.rows]
    if gone:
        conn.executemany("DELETE FROM chanlite_presence WHERE grp = ? AND channel = ?", gone)
    if kept:
        conn.executemany(_UPSERT, kept)


def _counts(conn: sqlite3.Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for chunk in _chunks(sorted(keys)):
        for grp, key, count in conn.execute(_pairs_sql(_COUNTS, "key", len(chunk)), _flat(chunk)):
            counts[grp, key] = count
    return counts


def write_diff(
    conn: sqlite3.Connection,
    diff: dict[str, Any],
    now: float,
    *,
    codec: Codec,
    expiry: float,
    capacity_of: Callable[[str], int],
) -> None:
    """Write *diff* as a group message (origin '': every process, this one too, reads it
    and delivers it to its members; plain-named members get a row each, room permitting)."""
    group = diff["group"]
    payload = codec.encode(diff)
    expires = now + expiry
    insert = (
        "INSERT INTO chanlite_messages (channel, owner, grp, origin, expires, payload) "
        "VALUES (?, '', ?, '', ?, ?)"
    )
    conn.execute(insert, ("", group, expires, payload))
    for (channel,) in conn.execute(
        # The owner index: the primary key would visit every member of the group.
        "SELECT channel FROM chanlite_groups INDEXED BY chanlite_groups_owner "
        "WHERE owner = '' AND grp = ? AND expires > ?",
        (group, now),
    ).fetchall():
        (backlog,) = conn.execute(
            "SELECT count(*) FROM chanlite_messages WHERE channel = ? AND expires > ?",
            (channel, now),
        ).fetchone()
        if backlog < capacity_of(channel):
            conn.execute(insert, (channel, "", expires, payload))
        else:
            logger.info("Presence diff for %r dropped: the channel is full", channel)


class PresenceWriter:
    """Joins and leaves, written in batches by one worker thread on a plain connection.

    A presence change is a transaction of several statements; run from the event loop it
    would hold the file's write lock across as many loop turns, and other processes would
    wait in SQLite's busy handler (which sleeps up to 100 ms between tries). Here the
    whole transaction runs in one go: everything queued meanwhile is one transaction,
    then every process (this one included) is woken to read the diffs. *connection* gives
    the blocking writer (its connection, lock, file checks and wake-ups); *owner* this
    process's client_id.
    """

    def __init__(
        self, connection: Callable[[], BlockingWriter], codec: Codec, owner: Callable[[], str]
    ) -> None:
        self._connection = connection
        self._codec = codec
        self._owner = owner
        self._lock = threading.Lock()
        self._pending: list[tuple[Join | Leave | LeaveOwned, asyncio.Future[None]]] = []
        self._draining = False

    async def submit(self, change: Join | Leave | LeaveOwned) -> None:
        """Queue *change* and wait until it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._pending.append((change, future))
            start = not self._draining
            self._draining = True
        if start:
            # Not awaited: the drain outlives a caller that is cancelled.
            loop.run_in_executor(None, self._drain)
        await future

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._draining = False
                    return
            try:
                self._write([change for change, _ in batch])
            except Exception as exc:  # DatabaseFileError and the like: the callers get it
                for _, future in batch:
                    resolve(future, error=exc)
            else:
                for _, future in batch:
                    resolve(future)

    def _write(self, changes: list[Join | Leave | LeaveOwned]) -> None:
        writer = self._connection()
        codec, owner = self._codec, self._owner()

        def write(conn: sqlite3.Connection, now: float) -> None:
            def send(diff: dict[str, Any]) -> None:
                write_diff(
                    conn,
                    diff,
                    now,
                    codec=codec,
                    expiry=writer.expiry,
                    capacity_of=writer.capacity_of,
                )

            apply_changes(conn, changes, codec=codec, owner=owner, send=send)

        writer.transaction(write)


def _flat(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [value for pair in pairs for value in pair]


def listing(
    codec: Codec, rows: Iterable[tuple[str, str, bytes]]
) -> dict[str, list[dict[str, Any]]]:
    """key -> metas (each with ``"ref"``) from ``(channel, key, stored meta)`` rows."""
    present: dict[str, list[dict[str, Any]]] = {}
    for channel, key, stored in rows:
        present.setdefault(key, []).append(with_ref(decode_meta(codec, stored), channel))
    return present


class Sweeper:
    """The heartbeat's presence work, on the reader thread's plain connection.

    *entries* gives this process's own entries ``{(group, channel): (key, stored)}``, put
    back if others removed them while it was presumed dead.
    """

    #: Every this many heartbeats, also look for entries of processes that are not
    #: registered at all (removed by a release without presence, or by hand).
    ORPHAN_CHECK = 10

    def __init__(
        self,
        client_id: str,
        *,
        codec: Codec,
        timeout: float,
        dead_after: float,
        expiry: float,
        capacity_of: Callable[[str], int],
        entries: Callable[[], dict[tuple[str, str], Entry]],
    ) -> None:
        self.client_id = client_id
        self.codec = codec
        self.timeout = timeout
        self.dead_after = dead_after
        self.expiry = expiry
        self.capacity_of = capacity_of
        self.entries = entries
        self._beats = 0
        self._lock = threading.Lock()

    def beat(self, conn: sqlite3.Connection, now: float, restored: bool) -> bool:
        """Inside the heartbeat's transaction: remove stale entries (and, if *restored*,
        put this process's back). Returns True if diffs were written.

        Runs before the heartbeat removes processes silent for *dead_after*, so their
        entries are found (and announced) here first.
        """
        with self._lock:
            self._beats += 1
            wrote = False
            if restored:
                wrote = self._restore(conn, now)
            cutoff = now - min(self.timeout, self.dead_after)
            stale = {
                client_id
                for (client_id,) in conn.execute(
                    "SELECT client_id FROM chanlite_processes "
                    "WHERE heartbeat < ? AND client_id != ?",
                    (cutoff, self.client_id),
                )
            }
            if self._beats % self.ORPHAN_CHECK == 0:
                stale.update(
                    owner
                    for (owner,) in conn.execute(
                        "SELECT DISTINCT owner FROM chanlite_presence WHERE owner NOT IN "
                        "(SELECT client_id FROM chanlite_processes)"
                    )
                )
            for owner in stale:
                wrote = self._remove(conn, owner, now) or wrote
            return wrote

    def _remove(self, conn: sqlite3.Connection, owner: str, now: float) -> bool:
        rows = conn.execute(
            "DELETE FROM chanlite_presence WHERE owner = ? RETURNING grp, channel, key, meta",
            (owner,),
        ).fetchall()
        if not rows:
            return False
        logger.info(
            "Removed %d presence entries of chanlite-sqlite process %s (silent for %g s)",
            len(rows),
            owner,
            self.timeout,
        )
        rows.sort()
        counts = _counts(conn, {(grp, key) for grp, _, key, _ in rows})
        # The counts are after the delete: add the removed ones back, then take them off
        # one by one so "last" marks the key's final meta, as separate leaves would.
        for grp, _, key, _ in rows:
            counts[grp, key] = counts.get((grp, key), 0) + 1
        work = _Diffs(self.codec, {(g, c): (k, m) for g, c, k, m in rows}, counts)
        for grp, channel, _, _ in rows:
            for diff in work.leave(grp, channel):
                self._send(conn, diff, now)
        return True

    def _restore(self, conn: sqlite3.Connection, now: float) -> bool:
        mine = self.entries()
        if not mine:
            return False
        logger.warning(
            "chanlite-sqlite process %s was presumed dead: announcing its %d presence "
            "entries again",
            self.client_id,
            len(mine),
        )
        pairs = sorted(mine)
        rows: dict[tuple[str, str], Entry] = {}
        for chunk in _chunks(pairs):
            sql = _pairs_sql(_ROWS, "channel", len(chunk))
            for grp, channel, key, meta in conn.execute(sql, _flat(chunk)):
                rows[grp, channel] = (key, meta)
        counts = _counts(conn, {(g, k) for (g, _), (k, _) in mine.items()})
        work = _Diffs(self.codec, rows, counts)
        for group, channel in pairs:
            key, stored = mine[group, channel]
            if rows.get((group, channel)) == (key, stored):
                continue
            for diff in work.join(group, channel, key, stored):
                self._send(conn, diff, now)
        conn.executemany(_UPSERT, [(g, c, k, m, self.client_id) for (g, c), (k, m) in mine.items()])
        return True

    def _send(self, conn: sqlite3.Connection, diff: dict[str, Any], now: float) -> None:
        write_diff(
            conn, diff, now, codec=self.codec, expiry=self.expiry, capacity_of=self.capacity_of
        )
