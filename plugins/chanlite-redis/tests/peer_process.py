"""Peer processes on a shared Redis, driven over stdin/stdout with JSON lines.

Both sides of one small protocol, for the peer scripts (``redis_peer.py``,
``streams_peer.py``) and the tests that drive them:

* the peer prints ``{"event": "ready", ...}`` once set up, ``{"event": "received", ...}``
  for what it receives, and answers each JSON command on stdin with
  ``{"event": "done", "op": ...}`` or ``{"event": "error", "op": ..., "error": ...}``;
  ``{"op": "quit"}`` (or stdin closing) ends it;
* :class:`PeerProcess` starts a peer script and speaks that protocol from the test.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

WAIT = 10.0


def emit(**event: Any) -> None:
    """Print one protocol line (the peer side)."""
    print(json.dumps(event), flush=True)


async def obey(run: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """The peer side's command loop: *run* each command read from stdin, answer it."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            return
        try:
            await run(command)
            emit(event="done", op=op)
        except Exception as exc:
            emit(event="error", op=op, error=f"{type(exc).__name__}: {exc}")


class PeerProcess:
    """One peer script's process, from the test side."""

    def __init__(self, process: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.process = process
        #: What the peer said when it was ready (its channels, its client id).
        self.ready = ready
        #: The messages of every ``received`` line read so far by :meth:`next_event`.
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, script: Path, *args: str) -> PeerProcess:
        """Run ``python SCRIPT ARGS`` and wait until it is ready."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        peer = cls(process, {})
        peer.ready = await peer.next_event("ready")
        return peer

    async def next_event(self, kind: str | None = None, timeout: float = WAIT) -> dict[str, Any]:
        """The next line of kind *kind* (any kind if None); an ``error`` line fails the
        test. Every ``received`` line read on the way is kept in :attr:`received`."""
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            assert line, "peer exited"
            event: dict[str, Any] = json.loads(line)
            if event["event"] == "error":
                raise AssertionError(event["error"])
            if event["event"] == "received" and "message" in event:
                self.received.append(event["message"])
            if kind is None or event["event"] == kind:
                return event

    async def command(self, **command: Any) -> None:
        """Send *command* (its answer is read later, with :meth:`next_event`)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()

    async def run(self, **command: Any) -> None:
        """Send *command* and wait until the peer has done it."""
        await self.command(**command)
        await self.next_event("done")

    def kill(self) -> None:
        """SIGKILL the peer: it stops dead, as in a crash."""
        if self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> None:
        self.kill()
        await self.process.wait()
