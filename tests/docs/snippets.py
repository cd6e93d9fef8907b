"""Read the code blocks of a Markdown page, and how each is to be run.

A fenced block is run according to an HTML comment on the line just before its fence
(invisible on the rendered page); with none, a ``python`` block is part of the page's
program and a ``sh`` block is run as shell commands:

``<!-- file: NAME -->`` / ``<!-- file: NAME append -->``
    write (or append) the block to NAME in the page's folder; not run by itself.
``<!-- pytest -->``
    the block is a test file: written as ``test_<line>.py`` and run by pytest in the
    page's folder, with no configuration but what the page itself wrote there.
``<!-- serve -->``
    a ``sh`` block with one long-running command (``chanlite run ...``): started in the
    background on a free port, and stopped at the end of the page; the page's program
    finds its address in ``os.environ["SERVER"]``.
``<!-- sh: checkout -->``, ``<!-- serve: checkout -->``, ``<!-- expect-fail: checkout -->``
    run in a folder where the paths of a chanlite checkout (``examples/``, ``plugins/``)
    exist, apart from the page's folder.
``<!-- cwd: FOLDER -->`` (on a line of its own)
    the page's later ``sh``, ``serve`` and ``expect-fail`` blocks run in FOLDER, a folder
    the page made (``django-admin startproject mysite``, then ``cwd: mysite``).
``<!-- expect-fail -->``
    a ``sh`` block that must exit non-zero (an example of an error message).
``<!-- install -->``, ``<!-- install: new-venv -->``
    install commands: not run here (they would change the environment the suite runs
    in) but by ``tests/docs/test_fresh_install.py``, in a new virtual environment on a
    copy of the checkout: ``new-venv`` blocks in the folder holding that copy (they make
    and activate the venv), the others in the copy with that venv active.
``<!-- no-run: REASON -->``
    not run; the reason is required and shown in the test's listing.

A comment of the form ``<!-- check`` ... ``-->`` holds hidden Python that pokes the app the
page built; the checks run after all of the page's Python blocks. ``--8<-- "path"``
(or ``"path:NAME"``, the lines between ``--8<-- [start:NAME]`` and ``[end:NAME]``;
pymdownx.snippets) inside a block stands for that
file of the repository; a block made only of such lines is not run again here: the
file's own tests run it.

The page's program (its ``python`` blocks, then its checks) runs once, after the page's
other blocks, in one namespace in a fresh interpreter with top-level ``await`` allowed;
each block is compiled at its own line of the page, so a traceback's line is the page's.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<body>[a-z-]+(?::[^\n]*?)?)\s*-->\s*$")
_INCLUDE = re.compile(r'^\s*-{2}8<-{2}\s+"(?P<path>[^":]+)(?::(?P<section>\w+))?"\s*$')
RUN_LANGS = {"python", "py", "sh", "bash", "shell"}
MODES = {"file", "pytest", "serve", "expect-fail", "no-run", "sh", "install"}


@dataclass
class Block:
    """One fenced block (or hidden check) of a page."""

    line: int  # 1-based line of the first code line in the page
    lang: str
    code: str
    # "cwd", "program", "check", "sh", "file", "pytest", "serve", "expect-fail",
    # "install", "no-run", "included", "other"
    mode: str
    arg: str = ""  # the file name for "file", the reason for "no-run", "new-venv" for "install"


def _resolve_includes(code: str) -> str:
    out = []
    for line in code.splitlines():
        match = _INCLUDE.match(line)
        if match:
            text = (ROOT / match["path"]).read_text()
            if match["section"]:
                start, end = (f"--8<-- [{edge}:{match['section']}]" for edge in ("start", "end"))
                text = text.split(start, 1)[1].split("\n", 1)[1].split(end, 1)[0]
                text = text.rsplit("\n", 1)[0]  # the comment line holding the end marker
            out.append(text.rstrip("\n"))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _mode(lang: str, marker: str | None) -> tuple[str, str]:
    if marker is not None:
        name, _, arg = marker.partition(":")
        name, arg = name.strip(), arg.strip()
        if name not in MODES:
            raise ValueError(f"unknown snippet marker {marker!r}")
        if name == "no-run" and not arg:
            raise ValueError("<!-- no-run: ... --> needs a reason")
        if name == "file" and not arg:
            raise ValueError("<!-- file: NAME --> needs a file name")
        return name, arg
    if lang in ("python", "py"):
        return "program", ""
    if lang in ("sh", "bash", "shell"):
        return "sh", ""
    return "other", ""


def read_blocks(page: Path) -> list[Block]:
    """The blocks of *page*, in order (hidden checks included)."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    marker: str | None = None
    while i < len(lines):
        line = lines[i]
        if line.strip() == "<!-- check":
            start = i + 1
            end = start
            while lines[end].strip() != "-->":
                end += 1
            code = textwrap.dedent("\n".join(lines[start:end])) + "\n"
            blocks.append(Block(start + 1, "python", code, "check"))
            i = end + 1
            continue
        found = _MARKER.match(line)
        if found and found["body"].startswith("cwd:"):
            blocks.append(Block(i + 1, "", "", "cwd", found["body"][4:].strip()))
            i += 1
            continue
        if found and not found["body"].startswith("check"):
            marker = found["body"]
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, token = fence["indent"], fence["fence"]
            lang = fence["info"].strip().split(" ")[0].lower() if fence["info"].strip() else ""
            start = i + 1
            end = start
            while not lines[end].strip().startswith(token):
                end += 1
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[start:end]]
            raw = textwrap.dedent("\n".join(body))
            code = _resolve_includes(raw)
            mode, arg = _mode(lang, marker)
            if mode in ("program", "sh") and all(
                _INCLUDE.match(ln) for ln in raw.splitlines() if ln.strip()
            ):
                mode = "included"  # a file of the repository that its own tests run
            blocks.append(Block(start + 1, lang, code, mode, arg))
            marker = None
            i = end + 1
            continue
        if line.strip():
            marker = None  # a marker applies to the fence right after it only
        i += 1
    return blocks


def program(blocks: list[Block]) -> list[tuple[int, str]]:
    """The page's program as ``(first line, code)`` chunks: its Python blocks in order,
    then its checks in order (an app takes no new routes once it has served, so the
    checks poke it after the page has built all of it)."""
    code = [(b.line, b.code) for b in blocks if b.mode == "program"]
    checks = [(b.line, b.code) for b in blocks if b.mode == "check"]
    return code + checks
