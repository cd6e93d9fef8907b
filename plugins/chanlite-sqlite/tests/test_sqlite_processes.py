"""Several OS processes sharing one file: groups, direct sends, plain queues, sync senders."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlite_harness import StartPeer

pytestmark = pytest.mark.timeout(60)


async def test_group_send_reaches_members_in_three_processes(start_peer: StartPeer) -> None:
    a, b, c = await asyncio.gather(start_peer(), start_peer(), start_peer())
    members = {}
    for peer, count in ((a, 2), (b, 3), (c, 1)):
        channels = [(await peer.call("new_channel"))["channel"] for _ in range(count)]
        for channel in channels:
            # Membership is shared: any process may add any channel.
            await a.call("group_add", group="room", channel=channel)
        members[peer.client_id] = sorted(channels)

    await c.call("group_send", group="room", message={"type": "chat.message", "text": "hi"})

    for peer in (a, b, c):
        item = await peer.wait_for(lambda e: e.get("event") == "local")
        # One item per process naming all of its members: fan-out happens per process.
        assert item["channels"] == members[peer.client_id]
        assert item["message"] == {"type": "chat.message", "text": "hi"}
    await asyncio.sleep(0.2)
    assert [len(peer.local()) for peer in (a, b, c)] == [1, 1, 1]

    # After a discard in another process, the member is no longer reached.
    gone = members[b.client_id][0]
    await c.call("group_discard", group="room", channel=gone)
    await a.call("group_send", group="room", message={"type": "second"})
    second = await b.wait_for(lambda e: e.get("message", {}).get("type") == "second")
    assert second["channels"] == members[b.client_id][1:]


async def test_direct_send_to_a_channel_owned_by_another_process(start_peer: StartPeer) -> None:
    owner, sender, other = await asyncio.gather(
        start_peer(capacity=2), start_peer(capacity=2), start_peer(capacity=2)
    )
    channel = (await owner.call("new_channel"))["channel"]
    await sender.call("send", channel=channel, message={"type": "direct", "n": 1})
    item = await owner.wait_for(lambda e: e.get("event") == "local")
    assert item == {"event": "local", "channels": [channel], "message": {"type": "direct", "n": 1}}
    assert other.local() == [] and sender.local() == []

    # Capacity is enforced across processes: the unconsumed backlog in the file counts.
    # (Peers consume as they go, so fill a process-specific channel nobody reads.)
    stranger = "specific.00000000abcd!nobody-reads-this"
    await sender.call("send", channel=stranger, message={"type": "fill"})
    await owner.call("send", channel=stranger, message={"type": "fill"})
    reply = await sender.try_call("send", channel=stranger, message={"type": "overflow"})
    assert not reply["ok"] and reply["error"].startswith("ChannelFull")


async def test_plain_channel_is_a_queue_shared_by_processes(start_peer: StartPeer) -> None:
    worker, producer, idle = await asyncio.gather(start_peer(), start_peer(), start_peer())
    waiting = asyncio.ensure_future(worker.call("receive", channel="jobs"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await producer.call("send", channel="jobs", message={"type": "job", "n": 7})
    reply = await waiting
    assert reply["message"] == {"type": "job", "n": 7}
    # Plain-named group members are plain queues too.
    await idle.call("group_add", group="workers", channel="jobs")
    await producer.call("group_send", group="workers", message={"type": "job", "n": 8})
    assert (await worker.call("receive", channel="jobs"))["message"]["n"] == 8


SYNC_SENDER = textwrap.dedent(
    """
    import asyncio, sys, threading
    from chanlite.broadcast import broadcast_event
    from chanlite_sqlite import SQLiteLayer

    layer = SQLiteLayer(sys.argv[1])
    errors = []

    def send(i):
        try:
            layer.group_send_blocking("room", {"type": "from.thread", "i": i})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    layer.send_blocking(sys.argv[2], {"type": "direct.sync"})
    layer.group_send_blocking("room", broadcast_event(text="frame"))
    assert not errors, errors
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        print("no loop")
    """
)


async def test_sync_sender_in_a_separate_process(db: Path, start_peer: StartPeer) -> None:
    a, b = await asyncio.gather(start_peer(), start_peer())
    channel_a = (await a.call("new_channel"))["channel"]
    channel_b = (await b.call("new_channel"))["channel"]
    await a.call("group_add", group="room", channel=channel_a)
    await b.call("group_add", group="room", channel=channel_b)

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SYNC_SENDER, str(db), channel_b],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no loop"

    for peer, channel in ((a, channel_a), (b, channel_b)):
        await peer.wait_for(lambda e: e.get("message", {}).get("text") == "frame")
        threads = sorted(
            e["message"]["i"] for e in peer.local() if e["message"]["type"] == "from.thread"
        )
        assert threads == [0, 1, 2, 3]
        broadcast = [e for e in peer.local() if e["message"]["type"] == "chanlite.broadcast"]
        assert broadcast == [
            {
                "event": "local",
                "channels": [channel],
                "message": {"type": "chanlite.broadcast", "text": "frame"},
            }
        ]
    direct = await b.wait_for(lambda e: e.get("message", {}).get("type") == "direct.sync")
    assert direct["channels"] == [channel_b]


async def test_chanlite_send_cli_reaches_groups_and_channels(
    db: Path, start_peer: StartPeer
) -> None:
    peer = await start_peer()
    channel = (await peer.call("new_channel"))["channel"]
    await peer.call("group_add", group="room.lobby", channel=channel)
    url = f"sqlite:///{db}"
    for args in (
        ["room.lobby", '{"type": "chat.message", "text": "to the group"}'],
        ["--channel", channel, '{"type": "chat.message", "text": "to the channel"}'],
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chanlite",
            "send",
            "--layer",
            url,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
    for text in ("to the group", "to the channel"):
        item = await peer.wait_for(lambda e, text=text: e.get("message", {}).get("text") == text)
        assert item["channels"] == [channel]


OPEN_AT = textwrap.dedent(
    """
    import sys, time
    from chanlite_sqlite.schema import open_database
    path, start = sys.argv[1], float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))  # every process opens at the same instant
    open_database(path, 5.0).close()
    """
)


def test_processes_creating_the_file_together_all_open_it(tmp_path: Path) -> None:
    # `chanlite run --workers N` on first start: N processes create one file at once.
    # Switching a new file to WAL gets an immediate SQLITE_BUSY for all but one of them
    # (SQLite bypasses its busy timeout there); each must wait its turn instead of failing.
    for attempt in range(6):
        path = tmp_path / f"new-{attempt}.db"
        start = f"{time.time() + 0.7:.6f}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT, str(path), start],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(5)
        ]
        failures = [p.communicate(timeout=30)[1] for p in procs]
        failures = [err for p, err in zip(procs, failures, strict=True) if p.returncode != 0]
        assert not failures, failures[0]
        assert path.exists()
