"""docs/upgrading.md shows what the tests run: every included file and section exists,
the inline Python runs as written, and the quoted log line is the one chanlite writes."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from chanlite import App, WebSocket
from chanlite.testing import TestClient

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "upgrading.md"
INCLUDE = re.compile(r"""^\s*--8<--\s+(["'])(?P<target>[^"']+)\1\s*$""", re.MULTILINE)
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(lang: str) -> dict[str, str]:
    """The page's *lang* blocks without includes, by their title (or first line)."""
    found = {}
    for match in FENCE.finditer(PAGE.read_text()):
        info, code = match["info"].strip(), match["code"]
        if info.split(" ")[0] == lang and "--8<--" not in code:
            title = re.search(r'title="([^"]+)"', info)
            found[title[1] if title else code.splitlines()[0]] = code
    return found


def test_every_included_file_and_section_exists() -> None:
    targets = [match["target"] for match in INCLUDE.finditer(PAGE.read_text())]
    assert len(targets) >= 14
    for target in targets:
        path, _, section = target.partition(":")
        text = (ROOT / path).read_text()
        assert "channels_upgrade" in path, f"{target}: not from the tested example"
        if section:
            start, end = f"# --8<-- [start:{section}]", f"# --8<-- [end:{section}]"
            assert text.count(start) == 1 and text.count(end) == 1, target
            body = text[text.index(start) + len(start) : text.index(end)]
            assert body.strip(), f"{target}: an empty section"


async def test_the_stacked_on_block_takes_both_spellings() -> None:
    namespace: dict[str, Any] = {}
    exec(blocks("python")["one function, both spellings"], namespace)
    app = namespace["app"]
    async with TestClient(app) as client, client.websocket("/ws/chat/lobby/") as ws:
        await ws.send_json({"message": "new style"})
        assert await ws.receive_json() == {"message": "new style"}
        await app.group_send("chat_lobby", {"type": "chat_message", "message": "old style"})
        assert await ws.receive_json() == {"message": "old style"}
    assert app.stats.events_unhandled == 0


async def test_the_quoted_log_line_is_chanlite_s(caplog: pytest.LogCaptureFixture) -> None:
    (quoted,) = blocks("text").values()
    app = App(layer="memory://")

    @app.websocket("/ws/chat/{room_name}/")
    async def chat(ws: WebSocket, room_name: str) -> None:
        await ws.join(f"chat_{room_name}")
        await ws.accept()
        async for _ in ws.iter_text():
            pass

    @chat.on("chat.message")
    async def chat_message(ws: WebSocket, event: dict[str, Any]) -> None:
        await ws.send_json({"message": event["message"]})

    caplog.set_level(logging.WARNING, logger="chanlite.websocket")
    async with TestClient(app) as client, client.websocket("/ws/chat/lobby/") as ws:
        await app.group_send("chat_lobby", {"type": "chat_message", "message": "dropped"})
        await app.group_send("chat_lobby", {"type": "chat.message", "message": "taken"})
        assert await ws.receive_json() == {"message": "taken"}
    (record,) = [r for r in caplog.records if "event dropped" in r.getMessage()]
    # The page names the handler as a reader would see it in a module: "on chat".
    logged = record.getMessage().replace(chat.__qualname__, "chat")
    assert " ".join(quoted.split()) == logged
