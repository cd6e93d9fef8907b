"""The database file: opening it, checking it is ours, creating and migrating its tables.

One row per message, whatever its kind:

* a **direct** message to a plain channel (``"chat"``): ``channel`` set, ``owner`` and
  ``grp`` empty; any process may claim it with ``receive``;
* a direct message to a **process-specific** channel (``"specific.<client_id>!tok"``):
  ``owner`` is that process, whose reader picks it up; the row is deleted once consumed, so
  its count is the channel's backlog for ``ChannelFull``;
* a **group** message: ``grp`` set, one row however many members; every process reads it
  and delivers it to its own members.

The schema carries a version (``chanlite_meta``) and ``PRAGMA application_id`` so a later
release can migrate a file, and a file made by something else is refused, not modified.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from chanlite_sqlite.errors import DatabaseFileError, DatabaseNotFound

T = TypeVar("T")

#: The layout this release writes; files at an older version are migrated on open.
SCHEMA_VERSION = 3
#: ``PRAGMA application_id`` of a chanlite-sqlite file ("CHNL").
APPLICATION_ID = 0x43484E4C
APPLICATION = "chanlite-sqlite"

_V1 = """
CREATE TABLE chanlite_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE chanlite_processes (
    client_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    wake_port INTEGER NOT NULL,      -- UDP port on 127.0.0.1 poked after commits; 0 = none
    heartbeat REAL NOT NULL,         -- time.time() of the last heartbeat
    cursor INTEGER NOT NULL          -- highest message id its reader has seen
) WITHOUT ROWID;

-- AUTOINCREMENT: ids are never reused, so a reader's "id > cursor" never skips a row.
CREATE TABLE chanlite_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,           -- '' for group messages
    owner TEXT NOT NULL,             -- client_id owning the channel, '' if plain
    grp TEXT NOT NULL,               -- group name for group messages, else ''
    origin TEXT NOT NULL,            -- client_id of the writer ('' for sync writers)
    expires REAL NOT NULL,
    payload BLOB NOT NULL
);
-- Partial: group rows (channel '') stay out of it, so a group message costs one insert.
CREATE INDEX chanlite_messages_channel ON chanlite_messages (channel, id) WHERE channel != '';
CREATE INDEX chanlite_messages_owner ON chanlite_messages (owner) WHERE owner != '';

CREATE TABLE chanlite_groups (
    grp TEXT NOT NULL,
    channel TEXT NOT NULL,
    owner TEXT NOT NULL,             -- client_id owning the channel, '' if plain
    expires REAL NOT NULL,
    PRIMARY KEY (grp, channel)
) WITHOUT ROWID;
CREATE INDEX chanlite_groups_owner ON chanlite_groups (owner, grp);
"""

# History and presence (see history.py and presence.py).
_V2 = """
-- The offset and epoch a group message got in its group's history (NULL: no history).
ALTER TABLE chanlite_messages ADD COLUMN hoffset INTEGER;
ALTER TABLE chanlite_messages ADD COLUMN epoch TEXT;

-- One row per history group: created with a new random epoch, so a new or replaced
-- file (or a flush) starts every stream in a new epoch.
CREATE TABLE chanlite_streams (
    grp TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last INTEGER NOT NULL,           -- the last offset given; 0 = nothing sent yet
    pruned INTEGER NOT NULL,         -- every offset <= pruned is gone (size or age)
    ttl REAL                         -- age limit in seconds of the last sender's policy
) WITHOUT ROWID;

CREATE TABLE chanlite_history (
    grp TEXT NOT NULL,
    pos INTEGER NOT NULL,            -- the message's offset
    created REAL NOT NULL,           -- time.time() of the send
    payload BLOB NOT NULL,           -- the message as sent, encoded once
    PRIMARY KEY (grp, pos)
) WITHOUT ROWID;

-- A group message with an offset is its history row too: every writer (the batching
-- writer, blocking senders) records history by writing the message, at no extra round
-- trip to the database.
CREATE TRIGGER chanlite_history_record AFTER INSERT ON chanlite_messages
WHEN NEW.hoffset IS NOT NULL AND NEW.grp != '' BEGIN
    INSERT INTO chanlite_history (grp, pos, created, payload)
    VALUES (NEW.grp, NEW.hoffset, (julianday('now') - 2440587.5) * 86400.0, NEW.payload);
END;

-- Raising pruned deletes what it passed: a range of the primary key.
CREATE TRIGGER chanlite_history_prune AFTER UPDATE OF pruned ON chanlite_streams
WHEN NEW.pruned > OLD.pruned BEGIN
    DELETE FROM chanlite_history WHERE grp = NEW.grp AND pos <= NEW.pruned;
END;

-- A presence entry per (group, connection channel), owned by the process that made it.
CREATE TABLE chanlite_presence (
    grp TEXT NOT NULL,
    channel TEXT NOT NULL,           -- the entry's "ref"
    key TEXT NOT NULL,
    owner TEXT NOT NULL,             -- client_id of the process; swept when it goes silent
    meta BLOB NOT NULL,              -- the meta dict, encoded with the layer codec
    PRIMARY KEY (grp, channel)
) WITHOUT ROWID;
CREATE INDEX chanlite_presence_key ON chanlite_presence (grp, key);
CREATE INDEX chanlite_presence_owner ON chanlite_presence (owner);
"""

# A history message is written by one statement that computes its offset from the stream
# row and advances the stream in its trigger (see history.py): atomic on its own, so a
# batch of sends needs no BEGIN/COMMIT round trips, and the policy travels with the row.
_V3 = """
ALTER TABLE chanlite_messages ADD COLUMN hsize INTEGER;  -- the sender's history policy
ALTER TABLE chanlite_messages ADD COLUMN httl REAL;
DROP TRIGGER chanlite_history_record;
-- Readers skip offsets <= pruned by themselves: delete in steps of 64, not row by row
-- (one page write per 64 messages instead of one per message).
DROP TRIGGER chanlite_history_prune;
CREATE TRIGGER chanlite_history_prune AFTER UPDATE OF pruned ON chanlite_streams
WHEN NEW.pruned / 64 > OLD.pruned / 64 BEGIN
    DELETE FROM chanlite_history WHERE grp = NEW.grp AND pos <= NEW.pruned;
END;
CREATE TRIGGER chanlite_history_record AFTER INSERT ON chanlite_messages
WHEN NEW.hoffset IS NOT NULL AND NEW.grp != '' BEGIN
    INSERT INTO chanlite_streams (grp, epoch, last, pruned, ttl)
    VALUES (NEW.grp, NEW.epoch, NEW.hoffset, max(0, NEW.hoffset - NEW.hsize), NEW.httl)
    ON CONFLICT (grp) DO UPDATE SET last = max(last, excluded.last),
        pruned = max(pruned, excluded.pruned), ttl = excluded.ttl;
    INSERT INTO chanlite_history (grp, pos, created, payload)
    VALUES (NEW.grp, NEW.hoffset, (julianday('now') - 2440587.5) * 86400.0, NEW.payload);
END;
"""

#: ``MIGRATIONS[n]`` turns a version ``n - 1`` file into version ``n``.
MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3}


def describe_error(path: str, exc: sqlite3.Error, timeout: float) -> DatabaseFileError:
    """Turn an sqlite3 error about *path* into a message that says what to do."""
    text = str(exc).lower()
    if os.path.isdir(path):
        reason = "is a directory. Point the layer at a file, e.g. sqlite:///chat.db"
    elif "locked" in text or "busy" in text:
        reason = (
            f"is locked by another process (waited {timeout:g} s). Another program holds a "
            "write lock on it; close it, or raise the layer's timeout option"
        )
    elif "readonly" in text or "read-only" in text or _read_only(path):
        reason = (
            "is read-only. The layer writes to the file and creates the -wal and -shm files "
            "beside it: make the file and its folder writable by this user"
        )
    elif "not a database" in text or "malformed" in text:
        reason = "is not an SQLite database (or is damaged). Point the layer at another path"
    elif "disk i/o error" in text:
        reason = (
            "cannot be read or written (disk I/O error). If it was just deleted or replaced "
            "while other processes had it open, they let go of the old file within a second: "
            "try again"
        )
    elif "unable to open" in text:
        reason = "cannot be opened or created. Check that its folder exists and is writable"
    else:
        reason = f"cannot be used: {exc}"
    return DatabaseFileError(f"Channel layer database {path} {reason}.")


def _read_only(path: str) -> bool:
    if os.path.exists(path):
        return not os.access(path, os.W_OK)
    folder = os.path.dirname(os.path.abspath(path))
    return os.path.isdir(folder) and not os.access(folder, os.W_OK)


def connect(path: str, timeout: float) -> sqlite3.Connection:
    """Open *path* in autocommit mode, WAL, with a busy timeout of *timeout* seconds."""
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise describe_error(path, exc, timeout) from None
    try:
        configure(conn, timeout)
    except sqlite3.Error as exc:
        conn.close()
        raise describe_error(path, exc, timeout) from None
    return conn


def configure(conn: sqlite3.Connection, timeout: float) -> None:
    """Per-connection settings: WAL (readers never block the writer), NORMAL sync."""
    row = _switch_to_wal(conn, timeout)
    if row is None or str(row[0]).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch to WAL mode (journal_mode is {row})")
    # In WAL mode NORMAL never corrupts the file; a power cut may lose the last commits,
    # a killed process loses nothing that was committed.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA journal_size_limit=8388608")


def _switch_to_wal(conn: sqlite3.Connection, timeout: float) -> tuple[object, ...] | None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers a conflict
    # here with SQLITE_BUSY at once, without its busy timeout: processes that open a new
    # file together (``--workers N`` on first start) would fail. Retry until *timeout*.
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            row: tuple[object, ...] | None = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return row
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def prepare(conn: sqlite3.Connection, path: str, timeout: float) -> None:
    """Create the tables in a new file, migrate an old one, refuse a foreign one."""
    try:
        if _current(conn):
            return  # the common case needs no write lock (a reader opening while a writer works)
        conn.execute("BEGIN IMMEDIATE")
        try:
            _prepare_locked(conn, path)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise describe_error(path, exc, timeout) from None


def _current(conn: sqlite3.Connection) -> bool:
    """True if the file is ours and at this release's version (read without a lock)."""
    if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        return False
    try:
        row = conn.execute(
            "SELECT value FROM chanlite_meta WHERE key = 'schema_version'"
        ).fetchone()
    except sqlite3.OperationalError:  # no such table: let the locked path say what it is
        return False
    return row is not None and row[0] == str(SCHEMA_VERSION)


def _prepare_locked(conn: sqlite3.Connection, path: str) -> None:
    tables = {
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_")
    }
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if not tables and application_id == 0:
        version = 0
    elif "chanlite_meta" in tables and application_id == APPLICATION_ID:
        meta = dict(conn.execute("SELECT key, value FROM chanlite_meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise _not_ours(path, tables)
        version = int(meta.get("schema_version", "0"))
    else:
        raise _not_ours(path, tables)
    if version > SCHEMA_VERSION:
        raise DatabaseFileError(
            f"Channel layer database {path} has schema version {version}, written by a newer "
            f"chanlite-sqlite; this one understands up to {SCHEMA_VERSION}. Upgrade it."
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        _run_script(conn, MIGRATIONS[target])
        if target == 1:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(
                "INSERT INTO chanlite_meta (key, value) VALUES ('application', ?)",
                (APPLICATION,),
            )
        conn.execute(
            "INSERT INTO chanlite_meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(target),),
        )


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT our transaction first; run statement by statement.
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


def _not_ours(path: str, tables: set[str]) -> DatabaseFileError:
    found = ", ".join(sorted(tables)) or "no tables"
    return DatabaseFileError(
        f"Channel layer database {path} is an SQLite file that chanlite-sqlite did not create "
        f"(it has {found}). Refusing to touch it: point the layer at a new or chanlite file."
    )


def open_database(path: str, timeout: float, create: bool = True) -> sqlite3.Connection:
    """Open and prepare *path*; every failure is a :class:`DatabaseFileError` naming it.

    Unless *create*, a missing file is :class:`DatabaseNotFound`, not a new database.
    """
    if not create and not os.path.lexists(path):
        where = "" if os.path.isabs(path) else f" (looked for {os.path.abspath(path)})"
        raise DatabaseNotFound(f"Channel layer database {path} does not exist{where}.")
    conn = connect(path, timeout)
    try:
        prepare(conn, path, timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def file_identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of *path*, or None if it is gone: it changes if it is replaced.

    An open connection keeps using a deleted file's inode, which nobody else can reach;
    comparing identities is how the layer notices (see the watcher's heartbeat).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


#: The files SQLite keeps beside a database in WAL mode.
SIDECARS = ("-wal", "-shm")


def sidecar_identities(path: str) -> dict[str, tuple[int, int] | None]:
    """``(device, inode)`` of *path*'s -wal and -shm files (None for one that is absent)."""
    return {suffix: file_identity(path + suffix) for suffix in SIDECARS}


def remove_old_sidecars(path: str, old: dict[str, tuple[int, int] | None]) -> None:
    """*path* was deleted or replaced: unlink its -wal and -shm if they are still the old
    file's (*old*, from :func:`sidecar_identities`).

    A new file at the path would otherwise share them with the processes still using the
    old one, and SQLite would mix the pages of two databases (a replacement would even
    take the old log's pages for its own). Processes with the old file open keep theirs.
    """
    for suffix, identity in old.items():
        if identity is not None and file_identity(path + suffix) == identity:
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                os.unlink(path + suffix)


class PathConnection:
    """One ``sqlite3`` connection to the database at *path*, for blocking calls from any
    thread (one at a time, under a lock).

    It is opened on first use, and again whenever the file at the path was deleted or
    replaced: the old inode is one nobody else reaches any more (a write there would reach
    nobody, a read would show an old history). Reopening unlinks the old file's -wal and
    -shm first (:func:`remove_old_sidecars`). Unless *create*, a missing file is
    :class:`DatabaseNotFound`.
    """

    def __init__(self, path: str, timeout: float, create: bool = True) -> None:
        self.path = path
        self.timeout = timeout
        self.create = create
        #: Whether opening the path created the file.
        self.created = False
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._sidecars: dict[str, tuple[int, int] | None] = {}

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(conn)`` under the lock. If it raises, a transaction it left open is
        rolled back; an ``sqlite3`` error is raised as the :class:`DatabaseFileError` that
        names the file, anything else (``ChannelFull``) as it is."""
        with self._lock:
            conn = self._open()
            try:
                return work(conn)
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise describe_error(self.path, exc, self.timeout) from None
                raise

    def _open(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is not None and self._identity != file_identity(self.path):
            remove_old_sidecars(self.path, self._sidecars)
            conn.close()
            conn = self._conn = None
        if conn is None:
            existed = os.path.lexists(self.path)
            conn = self._conn = open_database(self.path, self.timeout, self.create)
            self.created = self.created or not existed
            self._identity = file_identity(self.path)
            self._sidecars = sidecar_identities(self.path)
        return conn

    def close(self) -> None:
        """Close the connection; a later call opens it again."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
