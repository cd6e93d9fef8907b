"""``chanlite inspect`` against a real ``chanlite run --workers 2`` on SQLite and on Redis:
both workers are listed with their sockets, groups and presence entries (as text, as JSON
and in the refreshing terminal view), and a worker killed with ``kill -9`` disappears once
the layer's presence timeout has passed."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import secrets
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.server.procs import ROOT, Running, served, start

__all__ = ["served"]

pytestmark = pytest.mark.timeout(120)

#: Seconds after which a silent process's presence entries go (a layer URL option).
PRESENCE_TIMEOUT = 3


def inspect(layer: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chanlite", "inspect", "--layer", layer, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def inspect_json(layer: str) -> dict[str, Any]:
    done = inspect(layer, "--json")
    assert done.returncode == 0, done.stderr
    view: dict[str, Any] = json.loads(done.stdout)
    return view


async def until(layer: str, check: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = await asyncio.to_thread(inspect_json, layer)
        if check(view):
            return view
        assert time.monotonic() < deadline, f"never true; last view: {view}"
        await asyncio.sleep(0.3)


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def watch(layer: str, pids: set[int], timeout: float = 30.0) -> tuple[int, str]:
    """``chanlite inspect --watch`` in a terminal (a pty) until it has drawn the table
    twice with every one of *pids*, then Ctrl+C: its exit status and what it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chanlite", "inspect", "--layer", layer, "--watch", "0.3"],
        cwd=ROOT,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"},
        # Ctrl+C as a terminal delivers it, even when this run was started with SIGINT
        # ignored (a background job of a script): an ignored signal is inherited.
        preexec_fn=default_sigint,
    )
    os.close(slave)
    drawn = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            text = drawn.decode(errors="replace")
            if text.count("2 processes on") >= 2 and all(str(p) in text for p in pids):
                break
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    drawn += os.read(master, 65536)
                except OSError:  # the process ended: its terminal is gone
                    break
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, drawn.decode(errors="replace")


async def sockets_on_both_workers(url: str) -> dict[int, list[ClientConnection]]:
    """Open room sockets until each worker holds at least two (the kernel spreads them)."""
    by_pid: dict[int, list[ClientConnection]] = {}
    for _ in range(60):
        ws = await connect(f"{url}/room/a")
        pid = int((await ws.recv()).split()[1])
        by_pid.setdefault(pid, []).append(ws)
        if len(by_pid) == 2 and all(len(v) >= 2 for v in by_pid.values()):
            return by_pid
    raise AssertionError(f"connections did not reach both workers: {list(by_pid)}")


async def check_two_workers_then_kill_one(layer: str, served: list[Running]) -> None:
    server = start(
        "tests/ops/ops_app.py:app",
        "--layer",
        layer,
        "--workers",
        "2",
        "--no-access-log",
        "--log-level",
        "warning",
    )
    served.append(server)
    ws_url = server.url.replace("http://", "ws://")
    by_pid = await sockets_on_both_workers(ws_url)
    pids = set(by_pid)
    # Three sockets with a presence entry in room.p, wherever the kernel puts them.
    present: dict[int, list[ClientConnection]] = {}
    for _ in range(3):
        ws = await connect(f"{ws_url}/present/p")
        present.setdefault(int((await ws.recv()).split()[1]), []).append(ws)

    def listed(view: dict[str, Any]) -> bool:
        reports = {r["pid"]: r for r in view["processes"]}
        return all(
            pid in reports
            and reports[pid]["numbers"]["ws_open"] == len(by_pid[pid]) + len(present.get(pid, ()))
            and reports[pid]["groups"].get("room.a") == len(by_pid[pid])
            and reports[pid]["presence"].get("room.p", 0) == len(present.get(pid, ()))
            for pid in pids
        )

    view = await until(layer, listed)
    assert {r["pid"] for r in view["processes"]} == pids
    assert view["groups"]["room.a"] == sum(len(v) for v in by_pid.values())
    assert view["groups"]["room.p"] == 3 and view["presence"] == {"room.p": 3}
    for report in view["processes"]:
        assert report["host"] and report["heartbeat"] > report["started"]
    text = await asyncio.to_thread(inspect, layer)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("2 processes on "), text.stdout
    assert all(str(pid) in text.stdout for pid in pids)
    assert f"room.a ({view['groups']['room.a']})" in text.stdout
    assert "presence (entries): room.p (3)" in text.stdout
    # The refreshing view: drawn again and again until Ctrl+C, which ends it quietly.
    code, drawn = await asyncio.to_thread(watch, layer, pids)
    assert code == 0, drawn
    assert drawn.count("2 processes on") >= 2 and all(str(pid) in drawn for pid in pids), drawn

    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    await until(layer, lambda v: victim not in {r["pid"] for r in v["processes"]})
    # Gone once the layer's presence timeout passed (with room for a heartbeat or two).
    assert time.monotonic() - killed_at < PRESENCE_TIMEOUT + 20
    for ws in [w for group in (*by_pid.values(), *present.values()) for w in group]:
        await ws.close()


async def test_inspect_two_workers_on_sqlite(tmp_path: Path, served: list[Running]) -> None:
    layer = f"sqlite:///{tmp_path / 'ops.db'}?presence_timeout={PRESENCE_TIMEOUT}"
    await check_two_workers_then_kill_one(layer, served)


async def test_inspect_two_workers_on_redis(redis_server: Any, served: list[Running]) -> None:
    prefix = f"ops{secrets.token_hex(4)}"
    layer = f"{redis_server.url}?prefix={prefix}&presence_timeout={PRESENCE_TIMEOUT}"
    await check_two_workers_then_kill_one(layer, served)


def test_inspect_memory_shows_its_own_process() -> None:
    view = inspect_json("memory://")
    assert [r["pid"] for r in view["processes"]] != []
    assert len(view["processes"]) == 1
