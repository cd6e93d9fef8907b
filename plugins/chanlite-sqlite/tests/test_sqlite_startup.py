"""``chanlite run --layer sqlite:///...`` with a file it cannot use: it does not start
serving; one ``Error:`` line names the path, the cause and the fix; the exit status is
not 0; no traceback. (A locked file: tests/server/test_startup_checks.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from chanlite_sqlite import SQLiteLayer
from sqlite_harness import read_only

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).parent


def chanlite_run(layer: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "chanlite",
            "run",
            "sqlite_workers_app.py:app",
            "--layer",
            layer,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=45,
    )


def assert_refused(done: subprocess.CompletedProcess[str], *says: str) -> None:
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "serving" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    for text in says:
        assert text in errors[0], errors[0]


def test_a_read_only_file(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    SQLiteLayer(db).send_blocking("warm", {"type": "up"})
    with read_only(db):
        done = chanlite_run(f"sqlite:///{db}?timeout=0.5")
    assert_refused(
        done,
        f"Channel layer database {db} is read-only",
        "make the file and its folder writable by this user",
    )


def test_a_directory(tmp_path: Path) -> None:
    done = chanlite_run(f"sqlite:///{tmp_path}")
    assert_refused(
        done,
        f"Channel layer database {tmp_path} is a directory",
        "Point the layer at a file, e.g. sqlite:///chat.db",
    )
