"""A peer process for cross-process layer tests: another OS process sharing the layer.

``python -m chanlite.testing.peer LAYER_URL COMMAND JSON_ARGS`` builds its own layer from
the URL, runs one command and speaks JSON lines on stdout (``{"ready": ...}`` when it is
set up, then ``{"result": ...}``). The test side is :class:`Peer`::

    async with Peer(url, "send", group="room.1", count=100, tag="peer") as peer:
        await peer.ready()
        ...
        result = await peer.result()

A command that waits (``present``, ``watch``) ends when the test closes its stdin, or dies
with ``peer.kill()`` (SIGKILL: nothing of it runs any more, as in a crash).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from chanlite.layers.base import BaseLayer
from chanlite.layers.registry import get_layer
from chanlite.layers.streams import StreamPosition
from chanlite.testing.served import end_process

#: Bound on how long a peer may take to start and answer (a cold interpreter is slow).
PEER_TIMEOUT = 30.0

Command = Callable[..., Awaitable[Any]]


def _emit(**payload: Any) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _stdin_closed() -> None:
    await asyncio.to_thread(sys.stdin.read)


async def cmd_send(layer: BaseLayer, group: str, count: int, tag: str) -> int:
    """Send *count* events ``{"type": "peer.msg", "tag", "i"}`` to *group*, yielding between."""
    _emit(ready=os.getpid())
    for i in range(count):
        await layer.group_send(group, {"type": "peer.msg", "tag": tag, "i": i})
        await asyncio.sleep(0)
    return count


async def cmd_history(
    layer: BaseLayer, group: str, offset: int | None = None, epoch: str | None = None
) -> dict[str, Any]:
    """Read *group*'s history (after ``(offset, epoch)`` if given)."""
    _emit(ready=os.getpid())
    since = StreamPosition(offset, epoch) if offset is not None and epoch is not None else None
    page = await layer.history(group, since)
    return {
        "events": page.events,
        "position": [page.position.offset, page.position.epoch],
    }


async def cmd_present(layer: BaseLayer, group: str, key: str, meta: dict[str, Any]) -> str:
    """Join *group*'s presence as *key*; stay until stdin closes, then leave."""
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    await layer.presence_join(group, channel, key, meta)
    _emit(ready=channel)
    await _stdin_closed()
    await layer.presence_leave(group, channel)
    await layer.group_discard(group, channel)
    return channel


async def cmd_watch(layer: BaseLayer, group: str, count: int) -> list[dict[str, Any]]:
    """Join *group* and return the first *count* events that arrive for it."""
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    _emit(ready=channel)
    got: list[dict[str, Any]] = []
    while len(got) < count:
        _, event = await layer.receive_local()
        got.append(event)
    return got


COMMANDS: dict[str, Command] = {
    "send": cmd_send,
    "history": cmd_history,
    "present": cmd_present,
    "watch": cmd_watch,
}


async def _main(url: str, command: str, args: dict[str, Any]) -> None:
    layer = get_layer(url)
    try:
        result = await COMMANDS[command](layer, **args)
        _emit(result=result)
    finally:
        await layer.close()


class PeerError(RuntimeError):
    """The peer process failed or said something unexpected."""


class Peer:
    """One peer process running one command against the layer at *url*."""

    def __init__(self, url: str, command: str, **args: Any) -> None:
        if command not in COMMANDS:
            raise ValueError(f"unknown peer command {command!r}; known: {sorted(COMMANDS)}")
        self.url = url
        self.command = command
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Peer:
        """Start the process (returns at once; :meth:`ready` waits for it to be set up)."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chanlite.testing.peer",
            self.url,
            self.command,
            json.dumps(self.args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def __aenter__(self) -> Peer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _line(self, key: str) -> Any:
        process = self.process
        assert process is not None and process.stdout is not None, "start() the peer first"
        line = await asyncio.wait_for(process.stdout.readline(), PEER_TIMEOUT)
        if not line:
            await process.wait()
            err = b""
            if process.stderr is not None:
                err = await process.stderr.read()
            raise PeerError(
                f"peer {self.command!r} exited with {process.returncode} before saying "
                f"{key!r}:\n{err.decode(errors='replace')}"
            )
        payload = json.loads(line)
        if key not in payload:
            raise PeerError(f"peer {self.command!r} said {payload!r}, expected {key!r}")
        return payload[key]

    async def ready(self) -> Any:
        """Wait until the peer is set up; what it said (a pid, a channel name)."""
        return await self._line("ready")

    async def result(self) -> Any:
        """Wait for the command's result (closing stdin first: waiting commands end)."""
        self.close_stdin()
        return await self._line("result")

    def close_stdin(self) -> None:
        """Tell a waiting command (``present``) to finish."""
        process = self.process
        if process is not None and process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()

    def kill(self) -> None:
        """SIGKILL the peer: it stops dead, leaving whatever it held in the backend."""
        process = self.process
        if process is not None and process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """End the process (closing stdin, then killing it if it lingers) and reap it."""
        process = self.process
        if process is None:
            return
        self.close_stdin()
        await end_process(process, 10)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
