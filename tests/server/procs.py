"""Run ``chanlite run`` as a real process on a free port and wait for its banner."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = "tests/server/apps.py"


class Running:
    def __init__(self, proc: subprocess.Popen[str], url: str, banner: list[str]) -> None:
        self.proc = proc
        self.url = url
        self.banner = banner

    def get(self, path: str = "/", timeout: float = 5.0) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            body: bytes = response.read()
        return body.decode()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


def chanlite(
    *args: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chanlite", "run", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=pass_fds,
    )


def start(*args: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()) -> Running:
    """Start ``chanlite run`` and wait for its banner (which names the real port)."""
    if "--port" not in args and "--fd" not in args and not (env and "CHANLITE_PORT" in env):
        args = (*args, "--port", "0")
    proc = chanlite(*args, env=env, pass_fds=pass_fds)
    assert proc.stderr is not None
    banner: list[str] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            _out, err = proc.communicate(timeout=5)
            raise AssertionError(f"chanlite run exited early:\n{''.join(banner)}{err}")
        banner.append(line)
        if "layer:" in line:
            match = re.search(r"http://[\d.]+:\d+", "".join(banner))
            assert match, banner
            return Running(proc, match.group(0), banner)
    proc.kill()
    raise AssertionError(f"no banner within 40 s: {banner}")


def wait_until_serving(running: Running, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return running.get()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def served() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            try:
                running.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a child still holds the pipes open
                if running.proc.stderr is not None:
                    running.proc.stderr.close()
