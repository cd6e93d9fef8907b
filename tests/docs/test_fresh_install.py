"""A new user's first steps, on a new virtual environment: install from a checkout, then test.

The install commands are read from the pages (``<!-- install -->`` blocks, and every
``pip install -e ...`` the pages name inline), not retyped here, so a wrong command fails.
They run on a copy of the checkout, in a venv made by the Getting started block itself;
the README and Getting started then run in that venv alone, as tests/docs/test_snippets.py
runs every page: the app served and poked, its test run with the command the page gives
(plain ``pytest``: nothing but what the pages installed). pip's cache keeps this quick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs.snippets import ROOT, Block, read_blocks
from tests.docs.test_snippets import run_page

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
# `pip install -e ...` in running text (a table cell, a sentence), possibly wrapped.
_INLINE_INSTALL = re.compile(r"`(pip\s+install\s+-e\s[^`]*)`")
_FENCED = re.compile(r"^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
pytestmark = pytest.mark.timeout(600)


@dataclass
class Venv:
    """The new venv, as the Getting started block left the reader's shell."""

    checkout: Path  # the copy of the checkout the commands install from
    env: dict[str, str]  # the shell's environment after the block (the venv active)
    prefix: Path  # sys.prefix of that venv's python


def _where(page: Path, block: Block) -> str:
    return f"{page.relative_to(ROOT)}:{block.line}"


def _run(script: str, cwd: Path, env: dict[str, str], what: str) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{what} exited {done.returncode}\n--- script\n{script}\n--- stdout\n{done.stdout}"
            f"\n--- stderr\n{done.stderr}",
            pytrace=False,
        )
    return done.stdout


def _copy_checkout(dest: Path) -> None:
    """The files of the checkout as they are now (committed or not), without its venv,
    its build outputs or its .git: what a fresh clone plus the working changes holds."""
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not installed: apt-get install git", pytrace=False)
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree, not yet committed
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _base_env(home: Path) -> dict[str, str]:
    """A shell with no venv active and none of the suite's on PATH."""
    ours = str(Path(sys.executable).parent)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "CHANLITE_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != ours)
    env["HOME"] = env.get("HOME", str(home))  # pip's cache lives there
    return env


def _install_blocks(how: str) -> Iterator[tuple[Path, Block]]:
    for page in PAGES:
        for block in read_blocks(page):
            if block.mode == "install" and block.arg == how:
                yield page, block


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """Getting started's install block, run literally next to a copy of the checkout
    named as the block expects (``cd chanlite``)."""
    blocks = [block for page, block in _install_blocks("new-venv") if page == GETTING_STARTED]
    assert len(blocks) == 1, "Getting started has one <!-- install: new-venv --> block"
    block = blocks[0]
    base = tmp_path_factory.mktemp("fresh")
    checkout = base / "chanlite"
    _copy_checkout(checkout)
    env_file = base / "env.json"
    script = (
        block.code + f"\npython -c \"import json, os, sys; json.dump({{**os.environ, '_PREFIX': "
        f"sys.prefix}}, open({str(env_file)!r}, 'w'))\"\n"
    )
    _run(script, base, _base_env(base), f"{_where(GETTING_STARTED, block)} (the install)")
    env = json.loads(env_file.read_text())
    prefix = Path(env.pop("_PREFIX"))
    # The block made and activated a venv of its own, in the checkout it named.
    assert prefix.is_relative_to(checkout), prefix
    assert Path(env["VIRTUAL_ENV"]) == prefix
    return Venv(checkout, env, prefix)


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", GETTING_STARTED], ids=["README.md", "docs/getting-started.md"]
)
def test_the_page_runs_in_the_new_venv(venv: Venv, page: Path, tmp_path: Path) -> None:
    """The page as tests/docs/test_snippets.py runs it (the app served and poked, its
    test run with the page's own pytest command), on the new venv alone."""
    # The page's test command finds the pytest the Getting started block installed.
    found = _run("command -v pytest", tmp_path, venv.env, "command -v pytest").strip()
    assert Path(found) == venv.prefix / "bin" / "pytest", found
    run_page(page, tmp_path, venv.prefix / "bin")


def _inline_installs() -> list[tuple[str, str]]:
    """Every ``pip install -e ...`` the pages name in running text, once each, with the
    first page and line that names it."""
    found: dict[str, str] = {}
    for page in PAGES:
        text = page.read_text()
        # Blank out fenced blocks (keeping the line count): their commands are run as blocks.
        text = _FENCED.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for match in _INLINE_INSTALL.finditer(text):
            command = " ".join(match[1].split())
            line = text.count("\n", 0, match.start()) + 1
            found.setdefault(command, f"{page.relative_to(ROOT)}:{line}")
    return sorted(found.items())


def test_every_install_from_a_checkout_works_in_the_new_venv(venv: Venv) -> None:
    inline = _inline_installs()
    blocks = list(_install_blocks(""))
    assert inline and blocks, "the pages name install commands"
    for page, block in blocks:
        _run(block.code, venv.checkout, venv.env, _where(page, block))
    for command, where in inline:
        _run(command, venv.checkout, venv.env, f"{where}: `{command}`")
    commands = [command for command, _ in inline] + [block.code for _, block in blocks]
    plugins = sorted({m for c in commands for m in re.findall(r"plugins/([\w-]+)", c)})
    extras = sorted(
        {e for c in commands for m in re.findall(r"\[([\w,]+)\]", c) for e in m.split(",")}
    )
    assert plugins and extras
    # What was installed is there: each plugin imports and its layers are listed, and each
    # extra's requirements are installed.
    check = f"""
import importlib, importlib.metadata as md, json, re
for plugin in {plugins!r}:
    dist = md.distribution(plugin)
    importlib.import_module(plugin.replace("-", "_"))
    for ep in dist.entry_points.select(group="chanlite.layers"):
        print("layer", ep.name, plugin)
for extra in {extras!r}:
    for req in md.requires("chanlite") or []:
        if re.search(r"extra\\s*==\\s*.{{0,1}}" + extra + r"\\b", req):
            name = re.match(r"[A-Za-z0-9._-]+", req)[0]
            print("extra", extra, name, md.version(name))
"""
    out = _run(
        f"python - <<'EOF'\n{check}\nEOF\nchanlite plugins", venv.checkout, venv.env, "the check"
    )
    listed = out.split("extra", 1)[0]
    for plugin in plugins:
        schemes = re.findall(rf"^layer (\S+) {plugin}$", out, re.MULTILINE)
        assert schemes, f"{plugin} declares no layer"
        for scheme in schemes:
            assert re.search(rf"^{re.escape(scheme)}://\s+{plugin} ", out, re.MULTILINE), listed
    for extra in extras:
        assert re.search(rf"^extra {extra} ", out, re.MULTILINE), f"[{extra}] installs nothing"
