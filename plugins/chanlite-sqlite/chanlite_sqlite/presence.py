"""Presence in the file: one row per (group, connection channel), owned by its process.

* **Joins and leaves** are writer operations (:class:`PresenceScript`): a batch of them
  reads the rows and key counts it touches in two queries, works out each change in
  order, writes the result, and sends one ``presence.diff`` per change to the group as
  ordinary group messages in the same transaction, so the listing and the diffs never
  disagree and every process's members get them by the normal group delivery.
* **Liveness.** A process's entries live as long as its heartbeat in ``chanlite_processes``
  (refreshed at least every third of ``presence_timeout``). On each heartbeat every live
  process runs :meth:`Sweeper.sweep`: entries of a process silent for ``presence_timeout``
  (or no longer registered at all) are deleted and their leave diffs sent, in one
  transaction, so exactly one process announces each leave. A process that was only
  presumed dead (paused past the timeout) puts its entries back, announcing them again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from chanlite.layers import Codec, DecodeError, presence_diff, with_ref
from chanlite_sqlite.writer import Custom, GroupSend

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
_COUNTS = "SELECT grp, key, count(*) FROM chanlite_presence"
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


class PresenceScript:
    """Presence joins and leaves as writer operations (:class:`~chanlite_sqlite.writer.Custom`).

    *owner* is the writing process's client_id; *expires* gives a diff's expiry time.
    """

    def __init__(self, codec: Codec, owner: Callable[[], str], expires: Callable[[], float]):
        self.codec = codec
        self.owner = owner
        self.expires = expires

    def op(self, change: Join | Leave | LeaveOwned) -> Custom:
        """The writer operation for *change*."""
        return Custom(self, change, None)

    async def apply(self, db: aiosqlite.Connection, ops: list[Custom]) -> None:
        """Write a run of changes, in order; their diffs go in each op's ``sends``."""
        changes: list[Join | Leave | LeaveOwned] = [op.data for op in ops]
        rows: dict[tuple[str, str], Entry] = {}
        owned: dict[str, list[tuple[str, str]]] = {}
        for owner in {c.owner for c in changes if isinstance(c, LeaveOwned)}:
            found = owned[owner] = []
            for grp, channel, key, meta in await db.execute_fetchall(
                "SELECT grp, channel, key, meta FROM chanlite_presence WHERE owner = ? "
                "ORDER BY grp, channel",
                (owner,),
            ):
                rows[grp, channel] = (key, meta)
                found.append((grp, channel))
        pairs = list({(c.group, c.channel) for c in changes if not isinstance(c, LeaveOwned)})
        for chunk in _chunks(pairs):
            sql = _pairs_sql(_ROWS, "channel", len(chunk))
            for grp, channel, key, meta in await db.execute_fetchall(sql, _flat(chunk)):
                rows[grp, channel] = (key, meta)
        keys = list(
            {(group, key) for (group, _), (key, _) in rows.items()}
            | {(c.group, c.key) for c in changes if isinstance(c, Join)}
        )
        counts: dict[tuple[str, str], int] = {}
        for chunk in _chunks(keys):
            sql = _pairs_sql(_COUNTS, "key", len(chunk))
            for grp, key, count in await db.execute_fetchall(sql, _flat(chunk)):
                counts[grp, key] = count
        work = _Diffs(self.codec, rows, counts)
        expires = self.expires()
        for op, change in zip(ops, changes, strict=True):
            if isinstance(change, Join):
                diffs = work.join(change.group, change.channel, change.key, change.stored)
            elif isinstance(change, Leave):
                diffs = work.leave(change.group, change.channel)
            else:
                diffs = [d for pair in owned[change.owner] for d in work.leave(*pair)]
            op.sends = [self._send(diff, expires) for diff in diffs]
        me = self.owner()
        gone = [pair for pair in work.changed if pair not in work.rows]
        kept = [
            (group, channel, *work.rows[group, channel], me)
            for group, channel in work.changed
            if (group, channel) in work.rows
        ]
        if gone:
            await db.executemany(
                "DELETE FROM chanlite_presence WHERE grp = ? AND channel = ?", gone
            )
        if kept:
            await db.executemany(_UPSERT, kept)

    def _send(self, diff: dict[str, Any], expires: float) -> GroupSend:
        payload = self.codec.encode(diff)
        return GroupSend(diff["group"], payload, diff, expires, None)


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
        counts = self._counts(conn, {(grp, key) for grp, _, key, _ in rows})
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
        counts = self._counts(conn, {(g, k) for (g, _), (k, _) in mine.items()})
        work = _Diffs(self.codec, rows, counts)
        for group, channel in pairs:
            key, stored = mine[group, channel]
            if rows.get((group, channel)) == (key, stored):
                continue
            for diff in work.join(group, channel, key, stored):
                self._send(conn, diff, now)
        conn.executemany(_UPSERT, [(g, c, k, m, self.client_id) for (g, c), (k, m) in mine.items()])
        return True

    def _counts(
        self, conn: sqlite3.Connection, keys: set[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for chunk in _chunks(sorted(keys)):
            sql = _pairs_sql(_COUNTS, "key", len(chunk))
            for grp, key, count in conn.execute(sql, _flat(chunk)):
                counts[grp, key] = count
        return counts

    def _send(self, conn: sqlite3.Connection, diff: dict[str, Any], now: float) -> None:
        """Write *diff* as a group message (origin '': every process, this one too, reads it)."""
        group = diff["group"]
        payload = self.codec.encode(diff)
        expires = now + self.expiry
        insert = (
            "INSERT INTO chanlite_messages (channel, owner, grp, origin, expires, payload) "
            "VALUES (?, '', ?, '', ?, ?)"
        )
        conn.execute(insert, ("", group, expires, payload))
        for (channel,) in conn.execute(
            "SELECT channel FROM chanlite_groups WHERE grp = ? AND owner = '' AND expires > ?",
            (group, now),
        ).fetchall():
            (backlog,) = conn.execute(
                "SELECT count(*) FROM chanlite_messages WHERE channel = ? AND expires > ?",
                (channel, now),
            ).fetchone()
            if backlog < self.capacity_of(channel):
                conn.execute(insert, (channel, "", expires, payload))
            else:
                logger.info("Presence leave for %r dropped: the channel is full", channel)
