"""Bad URLs, unencodable messages and unusable files give clear errors and write nothing."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from chanlite_sqlite import SQLiteLayer
from chanlite_sqlite.schema import SCHEMA_VERSION, DatabaseFileError
from sqlite_harness import locked, read_only

from chanlite.layers import LayerConfigError, get_layer

pytestmark = pytest.mark.timeout(30)


# -- URLs --------------------------------------------------------------------------------


def test_url_paths_and_options() -> None:
    relative = get_layer("sqlite:///var/chat.db?capacity=7&expiry=2.5&poll_interval=0.01")
    assert isinstance(relative, SQLiteLayer)
    assert (relative.path, relative.capacity, relative.expiry) == ("var/chat.db", 7, 2.5)
    assert relative.poll_interval == 0.01
    absolute = get_layer("sqlite:////tmp/some%20dir/chat.db?heartbeat=0.5&heartbeat_timeout=3")
    assert isinstance(absolute, SQLiteLayer)
    assert absolute.path == "/tmp/some dir/chat.db"
    assert (absolute.heartbeat, absolute.heartbeat_timeout) == (0.5, 3)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite://", "no file name"),
        ("sqlite:///", "no file name"),
        ("sqlite://localhost/chat.db", "names a host"),
        ("sqlite:///chat.db?bogus=1", "Unknown option 'bogus'"),
        ("sqlite:///chat.db?capacity=many", "Malformed value 'many' for option 'capacity'"),
        ("sqlite:///chat.db?poll_interval=-1", "poll_interval"),
        ("sqlite:///chat.db?heartbeat=5&heartbeat_timeout=1", "heartbeat_timeout"),
        ("sqlite:///:memory:", "file path every process can open"),
    ],
)
def test_bad_urls(url: str, says: str) -> None:
    with pytest.raises(LayerConfigError, match=says):
        get_layer(url)


def test_channels_style_config() -> None:
    # Channels builds backends as backend_class(**CONFIG).
    layer = SQLiteLayer(**{"path": "x.db", "capacity": 5, "channel_capacity": {"a.*": 1}})
    assert (layer.path, layer.get_capacity("a.b"), layer.get_capacity("c")) == ("x.db", 1, 5)


# -- unencodable messages ------------------------------------------------------------------


def _rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM chanlite_messages").fetchone()[0])
    finally:
        conn.close()


async def test_unencodable_message_names_the_key_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "enc.db"
    layer = SQLiteLayer(db)
    try:
        await layer.group_add("g", "member")
        mine = await layer.new_channel()
        bad = {"type": "x", "data": {"ok": [1, 2], "when": datetime.date(2024, 1, 2)}}
        for send in (
            layer.send("plain", bad),
            layer.send(mine, bad),
            layer.group_send("g", bad),
        ):
            with pytest.raises(TypeError, match=r"message\['data'\]\['when'\] is date"):
                await send
        with pytest.raises(TypeError, match=r"message\['items'\]\[1\] is object"):
            await layer.send("plain", {"type": "x", "items": [1, object()]})
        with pytest.raises(TypeError, match=r"the key \(1, 2\) in message\['d'\]"):
            layer.group_send_blocking("g", {"type": "x", "d": {(1, 2): "tuple key"}})
        assert _rows(db) == 0
        assert await _nothing_local(layer)
    finally:
        await layer.close()


async def _nothing_local(layer: SQLiteLayer) -> bool:
    try:
        await asyncio.wait_for(layer.receive_local(), 0.2)
    except asyncio.TimeoutError:
        return True
    return False


# -- files ---------------------------------------------------------------------------------


async def test_not_a_chanlite_database(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    layer = SQLiteLayer(other)
    with pytest.raises(DatabaseFileError, match=rf"{other} is an SQLite file that chanlite"):
        await layer.group_send("g", {"type": "x"})
    await layer.close()
    conn = sqlite3.connect(other)
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["users"]  # untouched

    junk = tmp_path / "notes.db"
    junk.write_text("these are my notes, not a database\n" * 200)
    layer = SQLiteLayer(junk)
    with pytest.raises(DatabaseFileError, match=rf"{junk} is not an SQLite database"):
        layer.send_blocking("c", {"type": "x"})
    await layer.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    layer = SQLiteLayer(db)
    await layer.flush()
    await layer.close()
    conn = sqlite3.connect(db)
    version = conn.execute("SELECT value FROM chanlite_meta WHERE key = 'schema_version'")
    assert version.fetchone()[0] == str(SCHEMA_VERSION)
    conn.execute("UPDATE chanlite_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    layer = SQLiteLayer(db)
    with pytest.raises(DatabaseFileError, match=rf"{db} has schema version 99"):
        await layer.flush()
    await layer.close()


@pytest.fixture
def read_only_file(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "ro.db"
    SQLiteLayer(db).send_blocking("warm", {"type": "up"})  # a valid chanlite file
    with read_only(db):
        yield db


async def test_read_only_file(read_only_file: Path) -> None:
    layer = SQLiteLayer(read_only_file, timeout=0.5)
    with pytest.raises(DatabaseFileError, match=rf"{read_only_file} is read-only"):
        await layer.group_add("g", "c")
    with pytest.raises(DatabaseFileError, match=rf"{read_only_file} is read-only"):
        layer.group_send_blocking("g", {"type": "x"})
    await layer.close()


LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE chanlite_meta SET value = value WHERE key = 'application'")
print("locked", flush=True)
sys.stdin.read()
"""


async def test_locked_file(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    SQLiteLayer(db).send_blocking("warm", {"type": "up"})
    with locked(db, LOCKER):
        layer = SQLiteLayer(db, timeout=0.3)
        with pytest.raises(DatabaseFileError, match=rf"{db} is locked by another process"):
            await layer.group_send("g", {"type": "x"})
        with pytest.raises(DatabaseFileError, match=rf"{db} is locked by another process"):
            layer.send_blocking("c", {"type": "x"})
    # Once the lock is gone the same layer object works.
    await layer.send("c", {"type": "after"})
    assert (await asyncio.wait_for(layer.receive("c"), 5))["type"] == "after"
    await layer.close()
