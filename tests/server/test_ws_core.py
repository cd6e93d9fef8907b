"""The websockets versions the server supports: declared, installed, and tested.

``chanlite/server/ws_core.py`` goes past websockets' documented Sans-I/O API in a few
named places, so the dependency is bounded in ``pyproject.toml``. These tests check that
the bound, the module's own record of it and the installed version agree, and run the
byte-level protocol suites on the oldest supported release (installed into a scratch
directory with pip, a few seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib
import websockets
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from chanlite.server.ws_core import SUPPORTED

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_SUITES = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("tests/server/test_proto*.py"))


def declared() -> SpecifierSet:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if d.startswith("websockets")]
    return SpecifierSet(spec.removeprefix("websockets"))


def oldest_supported() -> str:
    (low,) = [s.version for s in declared() if s.operator == ">="]
    return low


def test_the_installed_websockets_is_inside_the_declared_range() -> None:
    assert declared() == SpecifierSet(SUPPORTED)
    assert Version(websockets.__version__) in declared(), websockets.__version__


def test_the_protocol_suites_pass_on_the_oldest_supported_websockets(tmp_path: Path) -> None:
    version = oldest_supported()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path),
         f"websockets=={version}"],
        check=True,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    check = "import websockets; print(websockets.__version__)"
    out = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True
    )
    assert Version(out.stdout.strip()) == Version(version)
    assert PROTOCOL_SUITES
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PROTOCOL_SUITES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
