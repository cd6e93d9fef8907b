"""The official `phoenix` npm client (version pinned in tests/node/package.json) against
real `chanlite run` processes: `node --test` in tests/node, installed with `npm ci`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
pytestmark = pytest.mark.timeout(600)


def node_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: the phoenix client suite needs Node.js 18+ and npm")
    return path


def npm_ci() -> None:
    """Install the lockfile's packages unless node_modules already matches it."""
    lock = NODE_DIR / "package-lock.json"
    stamp = NODE_DIR / "node_modules" / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    done = subprocess.run(
        [node_tool("npm"), "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci failed in {NODE_DIR}:\n{done.stdout}{done.stderr}")


def run_node_suite(*files: str) -> None:
    npm_ci()
    chanlite = Path(sys.executable).parent / "chanlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANLITE_")}
    env["CHANLITE_BIN"] = str(chanlite)
    done = subprocess.run(
        [node_tool("node"), "--test", "--test-reporter=spec", *files],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    if done.returncode != 0:
        pytest.fail(f"node --test {' '.join(files)} failed:\n{done.stdout}{done.stderr}")


def test_phoenix_client_topics() -> None:
    run_node_suite("topics.test.js")


def test_phoenix_client_history_and_presence() -> None:
    run_node_suite("streams.test.js")
