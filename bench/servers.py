"""The servers under test: how each one starts, and what its processes use.

Every server runs its app from ``bench/apps`` pinned to CPU 0 (``taskset``); ``running``
starts one on a free port and stops it afterwards, and ``rss_kb`` / ``cpu_seconds`` read
what it and its workers use from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
OUT = BENCH / "out"
MAIN_BIN = ROOT / ".venv" / "bin"
PEER_BIN = BENCH / ".venv" / "bin"
WSLOAD = OUT / "wsload"

SERVER_CPU = "0"
CLIENT_CPU = "1"
UVICORN = [
    "--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools",
    "--ws", "websockets-sansio", "--log-level", "warning", "--no-access-log",
]  # fmt: skip


@dataclass
class Server:
    """How to start one server under test."""

    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    pin: bool = True
    label: str = ""
    # Extra wsload arguments for the broadcast scenarios (e.g. other routes).
    bcast_args: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = ()  # empty: every scenario


def _chanlite(*extra: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        cmd = [str(MAIN_BIN / "chanlite"), "run", "chanlite_app:app"]
        return [*cmd, "--host", "127.0.0.1", "--port", str(port), *CHANLITE_FLAGS, *extra]

    return argv


def _chanlite_asgi(port: int) -> list[str]:
    cmd = [str(MAIN_BIN / "chanlite"), "run", "raw_asgi:app"]
    return [*cmd, "--host", "127.0.0.1", "--port", str(port), *CHANLITE_FLAGS]


def _uvicorn(target: str, *extra: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [str(PEER_BIN / "uvicorn"), target, "--port", str(port), *UVICORN, *extra]

    return argv


def _daphne(port: int) -> list[str]:
    cmd = [str(PEER_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
    return [*cmd, "channels_app:application"]


# Quiet flags for `chanlite run`, probed once from its --help (access logs cost throughput).
CHANLITE_FLAGS: list[str] = []


def _probe_chanlite_flags() -> None:
    help_text = subprocess.run(
        [str(MAIN_BIN / "chanlite"), "run", "--help"], capture_output=True, text=True, check=False
    ).stdout
    if "--no-access-log" in help_text:
        CHANLITE_FLAGS.append("--no-access-log")
    if "--log-level" in help_text:
        CHANLITE_FLAGS.extend(["--log-level", "warning"])


SERVERS: dict[str, Server] = {
    s.name: s
    for s in [
        Server("chanlite", _chanlite(), label="chanlite (built-in server)"),
        Server(
            "chanlite-handlers",
            _chanlite(),
            label="chanlite, group_send + on handler (no broadcast fast path)",
            bcast_args=("--sub-path", "/ws/sub-handler", "--pub-path", "/ws/pub-handler"),
            scenarios=("broadcast200", "broadcast1000"),
        ),
        Server(
            "chanlite-uvicorn",
            _uvicorn("chanlite_app:app"),
            env={"PYTHONPATH": f"{APPS}:{ROOT}"},
            label="chanlite App on uvicorn",
        ),
        Server(
            "asgi-chanlite",
            _chanlite_asgi,
            label="raw ASGI on chanlite's server",
            scenarios=("echo", "idle", "handshake", "http"),
        ),
        Server("starlette-uvicorn", _uvicorn("starlette_app:app"), label="Starlette + uvicorn"),
        Server("asgi-uvicorn", _uvicorn("raw_asgi:app"), label="raw ASGI + uvicorn"),
        Server(
            "channels-uvicorn", _uvicorn("channels_app:application"), label="Channels + uvicorn"
        ),
        Server("channels-daphne", _daphne, label="Channels + Daphne"),
    ]
}
PEERS_HTTP = list(SERVERS)


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout:.0f} s")


def descendants(pid: int) -> list[int]:
    """*pid* and every process below it (workers of a multi-process server)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def rss_kb(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int, tree: bool = True) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in descendants(pid) if tree else [pid]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@contextlib.contextmanager
def running(server: Server, port: int, extra_env: dict[str, str] | None = None) -> Iterator[int]:
    """Start *server* on *port*, yield its pid, stop it (SIGINT, then SIGKILL) afterwards."""
    env = {**os.environ, "PYTHONPATH": str(APPS), **server.env, **(extra_env or {})}
    argv = server.argv(port)
    if server.pin:
        argv = ["taskset", "-c", SERVER_CPU, *argv]
    log = open(OUT / f"server-{server.name}.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        argv, cwd=APPS, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_port(port, proc)
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is not installed (make system-deps installs it)")
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
