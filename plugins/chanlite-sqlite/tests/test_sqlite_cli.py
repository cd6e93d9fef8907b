"""``chanlite send`` on an SQLite layer, run as a real process: what it says it did, its
exit status, and one ``Error:`` line (never a traceback) for a file it cannot use."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chanlite_sqlite import SQLiteLayer
from sqlite_harness import Peer, locked, read_only

pytestmark = pytest.mark.timeout(60)

CHANLITE = Path(sys.executable).parent / "chanlite"
EVENT = '{"type": "chat.message", "text": "hi"}'


def chanlite_send(
    layer: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(CHANLITE), "send", "--layer", layer, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[Peer]:
    peer = await Peer.start(tmp_path / "chat.db")
    yield peer
    await peer.stop()


def test_a_missing_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    done = chanlite_send("sqlite:///typo.db", "room", EVENT, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: Channel layer database typo.db does not exist (looked for "
        f"{tmp_path / 'typo.db'}). Check the path, or pass --create to create it.\n"
    )
    assert list(tmp_path.iterdir()) == []

    done = chanlite_send("sqlite:///typo.db", "--create", "room", EVENT, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        3,
        "created the layer's storage for sqlite:///typo.db (it did not exist)\n"
        "nobody is in group 'room': the message reached no one\n",
        "",
    )
    assert (tmp_path / "typo.db").exists()
    # It says so only when it did.
    done = chanlite_send("sqlite:///typo.db", "--create", "room", EVENT, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (
        3,
        "nobody is in group 'room': the message reached no one\n",
    )


async def test_send_says_how_many_members_it_reached(tmp_path: Path, peer: Peer) -> None:
    layer = f"sqlite:///{tmp_path / 'chat.db'}"
    channels = sorted([(await peer.call("new_channel"))["channel"] for _ in range(2)])
    for channel in channels:
        await peer.call("group_add", group="room", channel=channel)

    done = await asyncio.to_thread(chanlite_send, layer, "room", EVENT)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "delivered to 2 members of group 'room'\n",
        "",
    )
    item = await peer.wait_for(lambda e: e.get("event") == "local")
    assert (item["channels"], item["message"]) == (channels, {"type": "chat.message", "text": "hi"})

    done = await asyncio.to_thread(chanlite_send, layer, "--broadcast-text", "all", "room")
    assert (done.returncode, done.stdout) == (0, "delivered to 2 members of group 'room'\n")

    await peer.call("group_discard", group="room", channel=channels[0])
    done = await asyncio.to_thread(chanlite_send, layer, "room", EVENT)
    assert (done.returncode, done.stdout) == (0, "delivered to 1 member of group 'room'\n")

    done = await asyncio.to_thread(chanlite_send, layer, "empty.room", EVENT)
    assert (done.returncode, done.stdout) == (
        3,
        "nobody is in group 'empty.room': the message reached no one\n",
    )


async def test_send_to_a_channel_says_whether_its_process_runs(tmp_path: Path, peer: Peer) -> None:
    layer = f"sqlite:///{tmp_path / 'chat.db'}"
    channel = (await peer.call("new_channel"))["channel"]
    done = await asyncio.to_thread(chanlite_send, layer, "--channel", channel, EVENT)
    assert (done.returncode, done.stdout) == (0, f"delivered to channel '{channel}'\n")
    item = await peer.wait_for(lambda e: e.get("event") == "local")
    assert item["channels"] == [channel]

    gone = "specific.0123456789ab!1"  # no process has that client id
    done = await asyncio.to_thread(chanlite_send, layer, "--channel", gone, EVENT)
    assert (done.returncode, done.stdout) == (
        3,
        f"nobody is listening on channel '{gone}': its process is not running\n",
    )
    done = await asyncio.to_thread(chanlite_send, layer, "--channel", "jobs", EVENT)
    assert (done.returncode, done.stdout) == (
        0,
        "queued on channel 'jobs' (whoever receives from it next gets it)\n",
    )


# -- files it cannot use: one line naming the path, the cause and the fix --------------------


def test_a_read_only_file(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    SQLiteLayer(db).send_blocking("warm", {"type": "up"})
    with read_only(db):
        done = chanlite_send(f"sqlite:///{db}?timeout=0.5", "room", EVENT)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: Channel layer database {db} is read-only. The layer writes to the file and "
        "creates the -wal and -shm files beside it: make the file and its folder writable "
        "by this user.\n"
    )


def test_a_directory(tmp_path: Path) -> None:
    done = chanlite_send(f"sqlite:///{tmp_path}", "room", EVENT)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: Channel layer database {tmp_path} is a directory. Point the layer at a "
        "file, e.g. sqlite:///chat.db.\n"
    )


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_locked_file(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    SQLiteLayer(db).send_blocking("warm", {"type": "up"})
    with locked(db, LOCKER):
        done = chanlite_send(f"sqlite:///{db}?timeout=0.3", "room", EVENT)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: Channel layer database {db} is locked by another process (waited 0.3 s). "
        "Another program holds a write lock on it; close it, or raise the layer's timeout "
        "option.\n"
    )
