"""``make run``: what it installs and where it serves (``make -n``: the commands, not run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_MAKE_ENV = {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}


def make_dry_run(*args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed: apt-get install make", pytrace=False)
    # Run as a top-level make even when the suite itself runs under ``make test``:
    # an inherited MAKELEVEL/MAKEFLAGS adds "Entering/Leaving directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in _MAKE_ENV}
    done = subprocess.run(
        [make, "--no-print-directory", "-n", "-B", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_make_run_takes_port_and_host() -> None:
    out = make_dry_run("run", "PORT=8765", "HOST=0.0.0.0")
    assert out.splitlines()[-1] == (
        ".venv/bin/chanlite run examples/chat/app.py:app --layer sqlite:///chat.db "
        "--host 0.0.0.0 --port 8765"
    )
    assert "--port 8000" in make_dry_run("run")


def test_make_run_installs_only_what_running_needs() -> None:
    out = make_dry_run("run")
    installs = [line for line in out.splitlines() if "pip install" in line and "pip\n" not in line]
    assert ".venv/bin/pip install -q -e . -e plugins/chanlite-sqlite" in installs
    assert "requirements-dev" not in out and "[test]" not in out and "django" not in out
    # The development toolchain is the other target, which `make test` uses.
    assert "-r requirements-dev.txt" in make_dry_run("setup")
