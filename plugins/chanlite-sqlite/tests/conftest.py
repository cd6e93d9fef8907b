"""Fixtures of the SQLite layer's tests: a database file of the test's own, and peer
processes (``sqlite_harness.Peer``) sharing it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlite_harness import Peer, StartPeer


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The path of a database file no other test uses (not created yet)."""
    return tmp_path / "shared.db"


@pytest.fixture
async def start_peer(db: Path, request: pytest.FixtureRequest) -> AsyncIterator[StartPeer]:
    """``await start_peer(**options)`` starts a peer process on *db*; a test module's
    ``PEER_OPTIONS`` are the defaults. Every peer is stopped after the test."""
    defaults = getattr(request.module, "PEER_OPTIONS", {})
    peers: list[Peer] = []

    async def start(**options: object) -> Peer:
        peer = await Peer.start(db, **{**defaults, **options})
        peers.append(peer)
        return peer

    yield start
    await asyncio.gather(*(peer.stop() for peer in peers))
