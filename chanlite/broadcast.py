"""The broadcast contract: one event type, one builder, one frame encoding.

:meth:`chanlite.App.broadcast` (and every blocking or plugin-side sender) puts a single
event of type :data:`BROADCAST` on the layer. The process that receives it writes one
WebSocket frame to every local member socket, with no Python handler per member: the
frame is encoded once by :func:`encode_frame` and the same bytes go to each transport.

Senders build the event with :func:`broadcast_event`; nothing else spells the type.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from websockets.frames import Frame, Opcode

#: The reserved event type of a broadcast: its frame goes straight to member sockets.
BROADCAST = "chanlite.broadcast"


def broadcast_event(
    *,
    text: str | None = None,
    bytes: builtins.bytes | None = None,
    json: Any = None,
    exclude: str | None = None,
) -> dict[str, Any]:
    """Build the layer event for a broadcast of exactly one of *text*, *bytes* or *json*.

    *exclude* names a channel that must not get the frame (the sender's own socket).

    >>> broadcast_event(json={"n": 1})
    {'type': 'chanlite.broadcast', 'text': '{"n":1}'}
    """
    event = _event(text, bytes, json)
    if exclude is not None:
        event["exclude"] = exclude
    return event


def _event(text: str | None, bytes: builtins.bytes | None, json: Any) -> dict[str, Any]:
    given = [name for name, value in (("text", text), ("bytes", bytes)) if value is not None]
    if json is not None:
        given.append("json")
    if len(given) != 1:
        raise TypeError("broadcast() takes exactly one of text=, bytes= or json=")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"broadcast(text=...) needs a str, not {type(text).__name__}")
        return {"type": BROADCAST, "text": text}
    if bytes is not None:
        if not isinstance(bytes, (builtins.bytes, bytearray, memoryview)):
            raise TypeError(f"broadcast(bytes=...) needs bytes, not {type(bytes).__name__}")
        return {"type": BROADCAST, "bytes": builtins.bytes(bytes)}
    return {"type": BROADCAST, "text": _dumps(json)}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_frame(event: dict[str, Any]) -> builtins.bytes:
    """The complete unmasked WebSocket frame for a broadcast *event*."""
    text = event.get("text")
    if text is not None:
        return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    return Frame(Opcode.BINARY, builtins.bytes(event.get("bytes") or b"")).serialize(mask=False)
