"""``chanlite run`` as a real OS process, for tests that need a server on a real socket.

A layer's own tests (cross-process, workers, restarts) start the server the way a user
does and talk to it over the network::

    async with served("app.py:app", "--layer", url, "--workers", "2", cwd=here) as server:
        async with websockets.connect(server.ws_url("/ws")) as client:
            ...

The server listens on a free port of 127.0.0.1; :func:`served` returns once its banner
says it serves (after the app's start-up, every worker listening), and everything it
logs is kept in :attr:`ServedApp.log`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

__all__ = ["ServedApp", "end_process", "served", "start_served"]

#: Bound on how long ``chanlite run`` may take to say it serves (a cold interpreter, and
#: several workers, are slow on a busy machine).
START_TIMEOUT = 40.0
#: Bound on a graceful stop before the process is killed.
STOP_TIMEOUT = 20.0


async def end_process(process: asyncio.subprocess.Process, timeout: float = STOP_TIMEOUT) -> None:
    """Wait up to *timeout* for *process* to exit (it was asked to), then SIGKILL it; reap it."""
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except asyncio.TimeoutError:
        if process.returncode is None:
            process.kill()
        await process.wait()


class ServedApp:
    """One ``chanlite run`` process: where it listens, what it logged, how to stop it."""

    def __init__(self, process: asyncio.subprocess.Process, url: str, log: list[str]) -> None:
        self.process = process
        #: ``http://127.0.0.1:PORT``
        self.url = url
        #: Every line the server wrote to stderr so far (the banner first).
        self.log = log
        self._reader = asyncio.ensure_future(self._read())

    def ws_url(self, path: str = "") -> str:
        """The ``ws://`` URL of *path* on this server."""
        return "ws://" + self.url.removeprefix("http://") + path

    def lines(self, text: str) -> list[str]:
        """The lines of the log that contain *text*."""
        return [line for line in self.log if text in line]

    async def _read(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        while line := await stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip("\n"))

    async def stop(self) -> None:
        """SIGTERM (a graceful shutdown), bounded by :data:`STOP_TIMEOUT`; reap it."""
        if self.process.returncode is None:
            self.process.terminate()
        await end_process(self.process)
        await self._reader


async def start_served(
    target: str,
    *args: str,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = START_TIMEOUT,
) -> ServedApp:
    """Start ``chanlite run TARGET --host 127.0.0.1 --port 0 ARGS`` in *cwd* and return
    once it serves. Raises AssertionError with what it said if it exits first."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chanlite", "run", target,
        "--host", "127.0.0.1", "--port", "0", *args,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    log: list[str] = []
    try:
        # The banner's last line names the layer; it is printed once the app started.
        while not any("layer:" in line for line in log):
            line = await asyncio.wait_for(process.stderr.readline(), timeout)
            assert line, "chanlite run exited early:\n" + "\n".join(log)
            log.append(line.decode(errors="replace").rstrip("\n"))
    except BaseException:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    match = re.search(r"http://[\d.]+:\d+", "\n".join(log))
    assert match, log
    return ServedApp(process, match.group(0), log)


@asynccontextmanager
async def served(
    target: str,
    *args: str,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = START_TIMEOUT,
) -> AsyncIterator[ServedApp]:
    """:func:`start_served`, stopped (:meth:`ServedApp.stop`) when the block ends."""
    server = await start_served(target, *args, cwd=cwd, env=env, timeout=timeout)
    try:
        yield server
    finally:
        await server.stop()
