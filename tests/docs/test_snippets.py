"""Every code block of the README and the docs runs, as a reader would run it.

One test per page: its blocks run in order in a fresh folder (``tests/docs/snippets.py``
says how a block is marked), its servers are started and poked, its test files are run
by pytest, and a broken example fails here, naming the page's line.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.docs.snippets import ROOT, Block, program, read_blocks

BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# The page's program: each chunk compiled at its line of the page, top-level await
# allowed (a page may `await app.group_send(...)`), all in one namespace.
RUN_PROGRAM = """
import ast, asyncio, json, sys
chunks, filename = json.load(open(sys.argv[1])), sys.argv[2]
ns = {"__name__": "__main__"}
loop = asyncio.new_event_loop()
for line, source in chunks:
    tree = ast.parse(source, filename)
    ast.increment_lineno(tree, line - 1)
    code = compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)
    if result is not None:
        loop.run_until_complete(result)
"""
_TESTED_BY = re.compile(r"<!--\s*snippets-tested-by:\s*(?P<path>\S+)\s*-->")
SERVE_TIMEOUT = 30.0
pytestmark = pytest.mark.timeout(240)


def _env(folder: Path, server: str | None, bin: Path = BIN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CHANLITE_"))}
    # *bin*'s venv, as if activated; the suite's own venv off PATH when it is another one.
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p not in (str(BIN), str(bin))]
    env["PATH"] = os.pathsep.join([str(bin), *rest])
    env["VIRTUAL_ENV"] = str(bin.parent)
    env.pop("PYTHONPATH", None)
    env["HOME"] = env.get("HOME", str(folder))
    if server is not None:
        env["SERVER"] = server
    return env


def _where(page: Path, block: Block) -> str:
    return f"{page.relative_to(ROOT)}:{block.line}"


def _run_sh(page: Path, block: Block, folder: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    failed = done.returncode != 0
    if failed != (block.mode == "expect-fail"):
        pytest.fail(
            f"{_where(page, block)}: `{block.code.strip()}` exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}",
            pytrace=False,
        )


def _serve(page: Path, block: Block, folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    argv = shlex.split(block.code.strip())
    if "--port" in argv:  # a free port: the documented one may be taken on this machine
        argv[argv.index("--port") + 1] = "0"
    else:
        argv += ["--port", "0"]
    proc = subprocess.Popen(
        argv,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    # Read on a thread: the server's output must keep flowing after the banner.
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + SERVE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=deadline - time.monotonic())
        except queue.Empty:
            break
        if not line:
            break
        seen.append(line)
        if line.startswith("  http://"):
            proc.server_url = line.strip()  # type: ignore[attr-defined]
            return proc
    _stop(proc)
    pytest.fail(
        f"{_where(page, block)}: `{block.code.strip()}` did not start serving\n{''.join(seen)}",
        pytrace=False,
    )


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _write(folder: Path, block: Block) -> None:
    name, _, how = block.arg.partition(" ")
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if how.strip() == "append":
        with path.open("a") as f:
            f.write("\n" + block.code)
    else:
        path.write_text(block.code)


def _pages() -> Iterator[object]:
    for page in PAGES:
        yield pytest.param(page, id=str(page.relative_to(ROOT)))


@pytest.mark.parametrize("page", list(_pages()))
def test_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    tested_by = _TESTED_BY.search(page.read_text())
    if tested_by:
        # The page's examples live in files a test of their own runs.
        assert (ROOT / tested_by["path"]).exists(), tested_by["path"]
        return
    run_page(page, tmp_path)


def run_page(page: Path, tmp_path: Path, bin: Path = BIN) -> None:
    """Run *page*'s blocks in a fresh folder under *tmp_path*, with the venv of *bin*
    (the suite's own by default; tests/docs/test_fresh_install.py gives a new one)."""
    blocks = read_blocks(page)
    folder = tmp_path / "work"
    folder.mkdir()
    # A block marked "checkout" runs where paths of a checkout (`examples/chat/app.py`,
    # `plugins/...`) work as in one; kept apart so that pytest in the page's folder does
    # not collect the repository's tests.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("examples", "plugins"):
        (checkout / name).symlink_to(ROOT / name)
    servers: list[subprocess.Popen[str]] = []
    server: str | None = None
    here = folder
    try:
        for block in blocks:
            env = _env(folder, server, bin)
            cwd = checkout if block.arg == "checkout" else here
            if block.mode == "cwd":
                here = folder / block.arg
            elif block.mode == "file":
                _write(folder, block)
            elif block.mode in ("sh", "expect-fail"):
                _run_sh(page, block, cwd, env)
            elif block.mode == "serve":
                proc = _serve(page, block, cwd, env)
                servers.append(proc)
                server = proc.server_url  # type: ignore[attr-defined]
            elif block.mode == "pytest":
                name = f"test_{page.stem.replace('-', '_')}_{block.line}.py"
                (folder / name).write_text(block.code)
                done = subprocess.run(
                    [str(bin / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", name],
                    cwd=folder,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                if done.returncode != 0:
                    pytest.fail(
                        f"{_where(page, block)}: the test file fails under pytest\n{done.stdout}"
                        f"\n{done.stderr}",
                        pytrace=False,
                    )
        chunks = program(blocks)
        if chunks:
            (folder / "_page.json").write_text(json.dumps(chunks))
            done = subprocess.run(
                [str(bin / "python"), "-c", RUN_PROGRAM, "_page.json", str(page)],
                cwd=folder,
                env={**_env(folder, server, bin), "PYTHONPATH": str(folder)},
                capture_output=True,
                text=True,
                timeout=180,
            )
            if done.returncode != 0:
                pytest.fail(
                    f"{page.relative_to(ROOT)}: the page's Python fails (line numbers are the "
                    f"page's)\n{done.stdout}\n{done.stderr}",
                    pytrace=False,
                )
    finally:
        for proc in servers:
            _stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def test_every_marker_is_known_and_every_no_run_says_why() -> None:
    for page in PAGES:
        for block in read_blocks(page):  # raises on an unknown marker or a missing reason
            assert block.mode != "no-run" or block.arg, _where(page, block)
