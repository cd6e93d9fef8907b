"""Drive ``sqlite_peer.py`` processes from async tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from chanlite.testing.served import end_process

HERE = Path(__file__).parent
PEER = HERE / "sqlite_peer.py"
WAIT = 10.0


class Peer:
    """One OS process running an SQLiteLayer on a shared file."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        #: Lines the process wrote to stderr (its log), when started with ``stderr=True``.
        self.stderr: list[str] = []
        self._stderr_reader = (
            asyncio.ensure_future(self._read_stderr()) if proc.stderr is not None else None
        )
        self.client_id = ""
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, db: Path, *, stderr: bool = False, **options: Any) -> Peer:
        """Start a peer on *db* with layer *options*; *stderr*: keep its log lines."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PEER),
            str(db),
            json.dumps(options),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if stderr else None,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        peer = cls(proc)
        ready = await peer.wait_for(lambda e: e.get("event") == "ready")
        peer.client_id = ready["client_id"]
        return peer

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            event = json.loads(line)
            if "id" in event and event["id"] in self._replies:
                self._replies.pop(event["id"]).set_result(event)
                continue
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"event": "exit"})
            self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace").rstrip("\n"))

    def log_lines(self, text: str) -> list[str]:
        """The stderr lines containing *text*."""
        return [line for line in self.stderr if text in line]

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one command in the process; raise if it failed."""
        reply = await self.try_call(op, **args)
        if not reply["ok"]:
            raise AssertionError(f"{op} failed in the peer: {reply['error']}")
        return reply

    async def try_call(self, op: str, **args: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[command_id] = future
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": command_id, "op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, WAIT)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first event matching *predicate*, waiting for it if needed."""

        async def find() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for event in self.events:
                        if predicate(event):
                            return event
                    if self.events and self.events[-1].get("event") == "exit":
                        raise AssertionError(f"peer exited; events: {self.events[-5:]}")
                    await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    def local(self) -> list[dict[str, Any]]:
        """Every ``receive_local`` item seen so far."""
        return [event for event in self.events if event.get("event") == "local"]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            await end_process(self.proc, 5)
        await self._reader
        if self._stderr_reader is not None:
            await self._stderr_reader

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()
        await self._reader
        if self._stderr_reader is not None:
            await self._stderr_reader


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[Path]:
    """Make the chanlite database *db* read-only (without its -wal/-shm) for a while."""
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.chmod(0o444)
    immutable = False
    if os.geteuid() == 0:
        # root ignores permission bits: make the file immutable instead.
        chattr = shutil.which("chattr")
        assert chattr, "chattr (e2fsprogs) is needed to make a read-only file as root"
        subprocess.run([chattr, "+i", str(db)], check=True)
        immutable = True
    try:
        yield db
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(db)], check=True)
        db.chmod(0o644)


StartPeer = Callable[..., Awaitable[Peer]]


@contextlib.contextmanager
def locked(db: Path, script: str) -> Iterator[None]:
    """Run *script* (Python, given the path of *db* as ``sys.argv[1]``) in another process
    while the block runs: it takes a lock on the file, prints ``locked`` and holds the lock
    until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
