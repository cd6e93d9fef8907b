"""Sending without an event loop: Django views, signals, management commands, cron scripts.

A plain ``sqlite3`` connection guarded by a lock, so the calls are safe from any thread and
start no event loop and no thread. A call is one short ``BEGIN IMMEDIATE ... COMMIT`` (about
0.2 ms) followed by a UDP poke to the processes that should read it. Rows are written with
an empty ``origin`` so that the layer object's own reader (if this process also serves
sockets) delivers them to its local channels like any other process would.

:class:`BlockingWriter` knows the file, not the layer: the layer implements
:class:`chanlite.layers.BlockingSends` with it.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections.abc import Callable

from chanlite.layers import ChannelFull, HistoryPolicy
from chanlite_sqlite.history import record_blocking
from chanlite_sqlite.schema import PathConnection

_INSERT = (
    "INSERT INTO chanlite_messages (channel, owner, grp, origin, expires, payload) "
    "VALUES (?, ?, ?, '', ?, ?)"
)


class BlockingWriter:
    """Blocking ``send``/``group_send`` of encoded payloads into one database file.

    *capacity_of* gives a channel's capacity; *expiry* is how long a message lives; unless
    *create*, a missing file is an error (:class:`~chanlite_sqlite.errors.DatabaseNotFound`).
    """

    def __init__(
        self,
        path: str,
        *,
        timeout: float,
        expiry: float,
        capacity_of: Callable[[str], int],
        create: bool = True,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.expiry = expiry
        self.capacity_of = capacity_of
        self._db = PathConnection(path, timeout, create)
        self._sock: socket.socket | None = None

    @property
    def created(self) -> bool:
        """Whether opening the path created the file."""
        return self._db.created

    def send(self, channel: str, owner: str, payload: bytes) -> int:
        """Store one direct message; raise :class:`ChannelFull` at capacity.

        Returns how many processes were told (0: the owner is not registered).
        """

        def write(conn: sqlite3.Connection, now: float) -> list[int]:
            if not self._has_room(conn, channel, now):
                raise ChannelFull(channel)
            conn.execute(_INSERT, (channel, owner, "", now + self.expiry, payload))
            return self._ports(conn, owner)

        return self._transaction(write)

    def group_send(
        self,
        group: str,
        payload: bytes,
        history: HistoryPolicy | None = None,
        stream_payload: Callable[[int, str], bytes] | None = None,
    ) -> tuple[int, list[str]]:
        """Store one group message (plus one row per plain-named member); with a *history*
        policy, give it the group's next offset and record it (the same SQL as the layer);
        plain-named members then get ``stream_payload(offset, epoch)``.

        Returns ``(members of the group, plain-named members that were full)``.
        """
        dropped: list[str] = []
        members = 0

        def write(conn: sqlite3.Connection, now: float) -> list[int]:
            nonlocal members
            expires = now + self.expiry
            (members,) = conn.execute(
                "SELECT count(*) FROM chanlite_groups WHERE grp = ? AND expires > ?", (group, now)
            ).fetchone()
            offset = epoch = None
            if history is not None:
                ((offset, epoch),) = record_blocking(conn, [(group, "", expires, payload, history)])
            else:
                conn.execute(_INSERT, ("", "", group, expires, payload))
            plain = conn.execute(
                "SELECT channel FROM chanlite_groups WHERE grp = ? AND owner = '' AND expires > ?",
                (group, now),
            ).fetchall()
            own = payload
            if plain and offset is not None and epoch is not None and stream_payload is not None:
                own = stream_payload(offset, epoch)
            for (channel,) in plain:
                if self._has_room(conn, channel, now):
                    conn.execute(_INSERT, (channel, "", "", expires, own))
                else:
                    dropped.append(channel)
            return self._ports(conn, None)

        self._transaction(write)
        return members, dropped

    def transaction(self, write: Callable[[sqlite3.Connection, float], None]) -> None:
        """Run *write* in one ``BEGIN IMMEDIATE ... COMMIT``, then wake every process
        (this one's reader too) to read what it wrote; file errors are DatabaseFileError."""

        def run(conn: sqlite3.Connection, now: float) -> list[int]:
            write(conn, now)
            return self._ports(conn, None)

        self._transaction(run)

    def _transaction(self, write: Callable[[sqlite3.Connection, float], list[int]]) -> int:
        """Run *write* in one ``BEGIN IMMEDIATE ... COMMIT``, then poke the readers it names."""

        def transaction(conn: sqlite3.Connection) -> list[int]:
            if self._sock is None:  # under the connection's lock: made once
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            conn.execute("BEGIN IMMEDIATE")
            ports = write(conn, time.time())
            conn.execute("COMMIT")
            return ports

        ports = self._db.run(transaction)  # an error rolls back what it began
        self._poke(ports)
        return len(ports)

    def _has_room(self, conn: sqlite3.Connection, channel: str, now: float) -> bool:
        (count,) = conn.execute(
            "SELECT count(*) FROM chanlite_messages WHERE channel = ? "
            "AND channel != '' AND expires > ?",
            (channel, now),
        ).fetchone()
        return bool(count < self.capacity_of(channel))

    @staticmethod
    def _ports(conn: sqlite3.Connection, owner: str | None) -> list[int]:
        if owner:
            rows = conn.execute(
                "SELECT wake_port FROM chanlite_processes WHERE client_id = ?", (owner,)
            )
        else:
            rows = conn.execute("SELECT wake_port FROM chanlite_processes WHERE wake_port > 0")
        return [port for (port,) in rows]

    def _poke(self, ports: list[int]) -> None:
        sock = self._sock
        if sock is None:
            return
        for port in ports:
            with contextlib.suppress(OSError):
                sock.sendto(b"w", ("127.0.0.1", port))

    def close(self) -> None:
        """Close the connection; a later call opens it again."""
        self._db.close()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
