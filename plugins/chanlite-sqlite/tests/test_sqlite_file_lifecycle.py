"""The database file deleted or replaced under running processes, and broken for a while.

Every process notices, opens the path again, registers there with its channels and
memberships, and says so in one log line; delivery resumes between the old processes,
a new one and ``chanlite send``. When the path cannot be opened again, the process stops
with one error line instead of serving deaf.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chanlite_sqlite import SQLiteLayer
from sqlite_harness import Peer, StartPeer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chanlite.testing.served import ServedApp, start_served

pytestmark = pytest.mark.timeout(90)

OPTIONS = {"heartbeat": 0.2, "heartbeat_timeout": 5}
PEER_OPTIONS = {"stderr": True, **OPTIONS}  # for the start_peer fixture
MOVED = "while in use; opened the path again"
_texts = itertools.count()


async def join(peer: Peer, group: str = "room") -> str:
    channel: str = (await peer.call("new_channel"))["channel"]
    await peer.call("group_add", group=group, channel=channel)
    return channel


async def delivered(sender: Peer, receivers: list[Peer]) -> None:
    """A group message from *sender* reaches every one of *receivers* (its own included)."""
    text = f"m{next(_texts)}"
    await sender.call("group_send", group="room", message={"type": "chat", "text": text})
    for peer in receivers:
        try:
            await peer.wait_for(
                lambda e: e.get("event") == "local" and e["message"].get("text") == text
            )
        except asyncio.TimeoutError:
            raise AssertionError(f"{text} did not reach {peer.client_id}: {peer.stderr}") from None


def chanlite_send(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    chanlite = Path(sys.executable).parent / "chanlite"
    return subprocess.run(
        [str(chanlite), "send", "--layer", f"sqlite:///{db}", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def remove(db: Path, with_wal: bool) -> None:
    db.unlink()
    if with_wal:
        for extra in ("-wal", "-shm"):
            Path(f"{db}{extra}").unlink(missing_ok=True)


async def wait_for_line(peers: list[Peer], text: str) -> None:
    async def all_logged() -> None:
        while not all(peer.log_lines(text) for peer in peers):
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(all_logged(), 15)
    except asyncio.TimeoutError:
        raise AssertionError(f"no {text!r} in {[peer.stderr for peer in peers]}") from None


@pytest.mark.parametrize("with_wal", [False, True], ids=["file", "file-wal-shm"])
async def test_deleted_file_is_recreated_and_delivery_resumes(
    db: Path, start_peer: StartPeer, with_wal: bool
) -> None:
    a, b = await asyncio.gather(start_peer(), start_peer())
    await join(a)
    await join(b)
    await delivered(a, [a, b])

    remove(db, with_wal)
    await wait_for_line([a, b], MOVED)
    assert db.exists()

    # Both directions between the old processes.
    await delivered(a, [a, b])
    await delivered(b, [a, b])
    # A process started on the new file, and the old ones, reach each other.
    c = await start_peer()
    await join(c)
    await delivered(c, [a, b, c])
    await delivered(a, [a, b, c])
    # So does `chanlite send` from the command line.
    sent = chanlite_send(db, "room", '{"type": "chat", "text": "from the cli"}')
    assert sent.returncode == 0, sent.stderr
    for peer in (a, b, c):
        await peer.wait_for(
            lambda e: e.get("event") == "local" and e["message"].get("text") == "from the cli"
        )
    # One line per process, naming the path and what happened; nothing after it.
    for peer in (a, b):
        (line,) = peer.log_lines(MOVED)
        assert re.search(rf"Channel layer database {db} was deleted( or replaced)? while", line)
        assert "registered this process with its 1 group membership" in line
    assert not c.log_lines(MOVED)
    assert not [line for peer in (a, b, c) for line in peer.stderr if "Traceback" in line]


async def test_a_message_sent_right_after_the_delete_is_not_lost(
    db: Path, start_peer: StartPeer
) -> None:
    a, b = await asyncio.gather(start_peer(), start_peer())
    await join(a)
    await join(b)
    await delivered(a, [a, b])
    remove(db, with_wal=False)
    # No waiting for the readers to notice: the writer checks the file before writing,
    # and waits until its process is registered in the new one.
    await delivered(a, [a, b])
    await delivered(b, [a, b])
    await wait_for_line([a, b], MOVED)


async def test_a_burst_across_the_delete_arrives_whole(db: Path, start_peer: StartPeer) -> None:
    # Messages written to the new file before a process has moved there must wait for it
    # (no heartbeat may trim them), and what the old file held for it is read first.
    count = 2000
    # B notices late (it checks the file every 2 s): A moves first and writes the rest of
    # the burst, with heartbeats, in the new file before B is there.
    a, b = await asyncio.gather(
        start_peer(capacity=100_000), start_peer(capacity=100_000, poll_interval=2)
    )
    await join(b)
    await a.call("burst", group="room", count=count, window=64)
    await a.wait_for(lambda e: e.get("event") == "sent" and e["i"] >= count // 4, 60)
    remove(db, with_wal=False)
    await a.wait_for(lambda e: e.get("event") == "sent" and e["i"] == count - 1, 60)

    def received() -> list[int]:
        return [e["message"]["i"] for e in b.local() if e["message"].get("type") == "burst"]

    deadline = time.monotonic() + 20
    while len(received()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sorted(received()) == list(range(count))  # every one, once
    assert (await b.call("drops"))["drops"] == {}
    await wait_for_line([a, b], MOVED)


async def test_replaced_file_is_used_and_delivery_resumes(db: Path, start_peer: StartPeer) -> None:
    a, b = await asyncio.gather(start_peer(), start_peer())
    await join(a)
    await join(b)
    await delivered(b, [a, b])

    other = db.with_name("other.db")
    spare = SQLiteLayer(other)
    spare.group_send_blocking("elsewhere", {"type": "warm"})  # another chanlite database
    await spare.close()
    os.replace(other, db)
    await wait_for_line([a, b], MOVED)

    await delivered(a, [a, b])
    await delivered(b, [a, b])
    c = await start_peer()
    await join(c)
    await delivered(c, [a, b, c])
    await delivered(b, [a, b, c])
    for peer in (a, b):
        (line,) = peer.log_lines(MOVED)
        assert f"{db} was deleted or replaced while in use" in line
    # The replacement is the file in use: its own rows are still there, intact.
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM chanlite_processes").fetchone()[0] == 3
    finally:
        conn.close()


async def test_messages_left_in_the_deleted_file_are_reported_lost(
    db: Path, start_peer: StartPeer
) -> None:
    a = await start_peer()
    await join(a)
    # Three messages on a plain channel nobody receives: they die with the file.
    for i in range(3):
        await a.call("send", channel="jobs", message={"type": "job", "i": i})
    remove(db, with_wal=False)
    await wait_for_line([a], MOVED)
    (line,) = a.log_lines(MOVED)
    assert "3 messages left in the old file for other processes could not be delivered" in line


async def test_folder_gone_stops_the_process_with_one_error(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "chat.db"
    peer = await Peer.start(db, stderr=True, **OPTIONS)
    try:
        await join(peer)
        shutil.rmtree(folder)
        code = await asyncio.wait_for(peer.proc.wait(), 30)
        await peer.stop()
        assert code == -signal.SIGTERM
        lines = peer.log_lines("cannot be opened again")
        assert len(lines) == 1, peer.stderr
        assert f"Channel layer database {db} was deleted while in use" in lines[0]
        assert f"its folder {folder} is gone" in lines[0]
        assert "stopping it" in lines[0]
    finally:
        await peer.stop()


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
print("unlocked", flush=True)
sys.stdin.read()
"""


async def test_a_locked_file_is_logged_once_and_once_when_it_recovers(
    db: Path, start_peer: StartPeer
) -> None:
    a = await start_peer(timeout=0.3)
    await join(a)
    locker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOCKER,
        str(db),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert locker.stdin is not None and locker.stdout is not None
    try:
        assert (await locker.stdout.readline()).strip() == b"locked"
        # The reader's rounds fail for a while (each waits out its busy timeout).
        await wait_for_line([a], "is locked by another process")
        # A write fails to its caller with the same words, and adds no log line.
        for _ in range(3):
            reply = await a.try_call("group_send", group="room", message={"type": "x"})
            assert not reply["ok"] and "is locked by another process" in reply["error"]
        await asyncio.sleep(3)
        locker.stdin.write(b"go\n")
        await locker.stdin.drain()
        assert (await locker.stdout.readline()).strip() == b"unlocked"
        await wait_for_line([a], "is usable again")
    finally:
        locker.stdin.close()
        await locker.wait()
    await delivered(a, [a])
    assert len(a.log_lines("is locked by another process")) == 1, a.stderr
    assert len(a.log_lines("is usable again")) == 1
    assert os.path.exists(db)


# -- the same with `chanlite run` servers and WebSocket clients ------------------------------


async def start_server(db: Path) -> ServedApp:
    """One ``chanlite run`` process serving ``sqlite_workers_app.py`` on *db*."""
    return await start_served(
        "sqlite_workers_app.py:app",
        "--layer", f"sqlite:///{db}?heartbeat=0.2&heartbeat_timeout=5", "--no-access-log",
        cwd=Path(__file__).parent,
    )  # fmt: skip


async def client_of(server: ServedApp) -> ClientConnection:
    client = await connect(server.ws_url("/ws"), open_timeout=10)
    hello = await asyncio.wait_for(client.recv(), 10)
    assert isinstance(hello, str) and hello.startswith("pid ")
    return client


async def test_servers_recover_from_a_deleted_file(db: Path) -> None:
    servers: list[ServedApp] = []
    clients: list[ClientConnection] = []

    try:
        servers += await asyncio.gather(start_server(db), start_server(db))
        clients += [await client_of(server) for server in servers]
        await clients[0].send("before")
        for client in clients:
            assert (await asyncio.wait_for(client.recv(), 10)).endswith(": before")

        db.unlink()

        async def logged() -> None:
            while not all(server.lines(MOVED) for server in servers):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(logged(), 15)
        for i, client in enumerate(clients):
            await client.send(f"after {i}")
            for other in clients:
                assert (await asyncio.wait_for(other.recv(), 10)).endswith(f": after {i}")

        servers.append(await start_server(db))
        clients.append(await client_of(servers[-1]))
        for i, client in enumerate(clients):
            await client.send(f"three {i}")
            for other in clients:
                assert (await asyncio.wait_for(other.recv(), 10)).endswith(f": three {i}")
        sent = chanlite_send(db, "--broadcast-text", "from the cli", "room")
        assert sent.returncode == 0, sent.stderr
        for client in clients:
            assert await asyncio.wait_for(client.recv(), 10) == "from the cli"
        for server in servers[:2]:
            assert len(server.lines(MOVED)) == 1, server.log
        assert not servers[2].lines(MOVED)
        assert not [line for server in servers for line in server.log if "Traceback" in line]
    finally:
        await asyncio.gather(*(client.close() for client in clients))
        await asyncio.gather(*(server.stop() for server in servers))


def test_a_layer_used_from_one_event_loop_per_call_moves_too(db: Path) -> None:
    # As Django Channels' async_to_sync does: no loop runs between calls, so the write
    # connection is let go of from the reader's thread.
    layer = SQLiteLayer(db, heartbeat=0.2)

    async def join() -> str:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        return channel

    channel = asyncio.run(join())
    try:
        db.unlink()
        deadline = time.monotonic() + 15
        while layer.reopened == 0:
            assert time.monotonic() < deadline, "the deleted file was not noticed"
            time.sleep(0.02)

        async def send_and_receive() -> tuple[list[str], dict[str, object]]:
            await layer.group_send("room", {"type": "after"})
            channels, message = await asyncio.wait_for(layer.receive_local(), 10)
            return sorted(channels), message

        assert asyncio.run(send_and_receive()) == ([channel], {"type": "after"})
        conn = sqlite3.connect(db)
        try:
            groups = conn.execute("SELECT grp, channel FROM chanlite_groups").fetchall()
        finally:
            conn.close()
        assert groups == [("room", channel)]
    finally:
        asyncio.run(layer.close())


async def test_a_server_whose_folder_is_gone_stops_with_one_error(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "chat.db"
    server = await start_server(db)
    try:
        client = await client_of(server)
        shutil.rmtree(folder)
        code = await asyncio.wait_for(server.process.wait(), 30)
        await server.stop()
        # A graceful stop (the client is told the server is going away), status 1.
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert code == 1, server.log
        (line,) = server.lines("cannot be opened again")
        assert f"its folder {folder} is gone" in line and "stopping it" in line
        assert not [line for line in server.log if "Traceback" in line]
    finally:
        await server.stop()


async def test_closing_after_a_move_unregisters_from_the_new_file(db: Path) -> None:
    layer = SQLiteLayer(db, heartbeat=0.2)
    await layer.group_add("room", await layer.new_channel())
    db.unlink()
    deadline = time.monotonic() + 15
    while layer.reopened == 0:  # nothing written since: the writer was only released
        assert time.monotonic() < deadline, "the deleted file was not noticed"
        await asyncio.sleep(0.02)
    await layer.close()
    conn = sqlite3.connect(db)
    try:
        for table in ("chanlite_processes", "chanlite_groups"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    finally:
        conn.close()


async def test_presence_is_put_back_in_the_new_file(db: Path, start_peer: StartPeer) -> None:
    a, b = await asyncio.gather(start_peer(), start_peer())
    tab = (await a.call("new_channel"))["channel"]
    await a.call("presence_join", group="room.p", channel=tab, key="ada", meta={"n": 1})
    assert list((await b.call("presence", group="room.p"))["presence"]) == ["ada"]
    remove(db, with_wal=False)
    await wait_for_line([a, b], MOVED)

    async def listed() -> None:
        while list((await b.call("presence", group="room.p"))["presence"]) != ["ada"]:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(listed(), 10)  # at a's next heartbeat in the new file
