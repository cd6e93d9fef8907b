"""The peer process of the cross-process contract suite, on the memory layer (its own)."""

from __future__ import annotations

import pytest

from chanlite.testing.peer import Peer, PeerError


async def test_a_peer_runs_its_command_in_another_process() -> None:
    import os

    async with Peer(
        "memory://?history=room.*:10", "send", group="room.p", count=3, tag="t"
    ) as peer:
        pid = await peer.ready()
        assert pid != os.getpid()
        assert await peer.result() == 3


async def test_a_waiting_peer_ends_when_told_or_killed() -> None:
    async with Peer("memory://", "present", group="g", key="k", meta={"a": 1}) as peer:
        channel = await peer.ready()
        assert "!" in channel
        assert await peer.result() == channel
    peer = await Peer("memory://", "present", group="g", key="k", meta={}).start()
    await peer.ready()
    peer.kill()
    await peer.stop()
    assert peer.process is not None and peer.process.returncode == -9


async def test_a_failing_peer_reports_its_error() -> None:
    async with Peer("nosuch://", "send", group="g", count=1, tag="t") as peer:
        with pytest.raises(PeerError, match="No channel layer is installed"):
            await peer.ready()


def test_unknown_commands_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown peer command"):
        Peer("memory://", "dance")
