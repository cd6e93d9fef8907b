"""History and presence of topics, on the wire as phoenix.js reads them (no I/O here).

**History.** A topic declared with ``history=N`` keeps its last N messages in the layer
(``App.history`` for its group). Each of its messages goes to the client with its stream
position in the *ref* slot, ``"<offset>:<epoch>"`` (phoenix.js hands it to
``channel.on(event, (payload, ref) => ...)``); a join may carry ``{"since": ref}`` (or
``{"since": {"offset": n, "epoch": e}}``) to get exactly what it missed, and
``{"last": n}`` for the newest n when it has no position (or it cannot be served). The
join reply's response then has ``"history": {"offset", "epoch", "recovered"}`` (and
``"reason"`` -- ``"epoch"``, ``"too_old"``, ``"future"`` -- when not recovered).

**Presence.** A topic declared with ``presence=True`` lets a channel ``track(key, meta)``;
the joining client gets ``presence_state`` and every subscriber ``presence_diff``, in the
shape ``Presence`` in phoenix.js consumes: ``{key: {"metas": [{...meta, "phx_ref": ref}]}}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from chanlite.layers.streams import StreamPosition
from chanlite.topics.protocol import encode_message

__all__ = [
    "MESSAGE",
    "message_event",
    "parse_since",
    "position_ref",
    "presence_diff_payload",
    "presence_state",
    "topic_glob",
]

#: The layer event of a message to a history topic (the layer adds offset and epoch).
MESSAGE: Final = "phx.message"
#: Where a process keeps a message's encoding once made: one encoding per process.
_ENCODED: Final = "phx.encoded"

_PARAM = re.compile(r"{[^}]*}")
_UNSAFE = re.compile(r"[^a-zA-Z0-9\-.]")


def _escape(text: str) -> str:
    return _UNSAFE.sub(lambda m: "".join(f"_{b:02x}" for b in m[0].encode()), text)


def topic_glob(pattern: str) -> str:
    """The group glob covering every topic of *pattern* (see ``topic_group``).

    >>> topic_glob("room:{name}")
    'phx.room_3a*'
    """
    parts = _PARAM.split(pattern)
    return "phx." + "*".join(_escape(part) for part in parts)


def message_event(topic: str, event: str, payload: Any, exclude: str | None) -> dict[str, Any]:
    """The layer event of one message to a history topic."""
    message = {"type": MESSAGE, "topic": topic, "event": event, "payload": payload}
    if exclude is not None:
        message["exclude"] = exclude
    return message


def position_ref(offset: Any, epoch: Any) -> str:
    """The ref a history message carries: ``"<offset>:<epoch>"``."""
    return f"{offset}:{epoch}"


def encoded(message: dict[str, Any]) -> str | bytes:
    """The client message for a history event, encoded once per process.

    The event dict is shared by every local subscriber (the layer builds one per
    delivery), so the first one to send it leaves the encoding there for the others.
    """
    cached = message.get(_ENCODED)
    if cached is None:
        ref = position_ref(message.get("offset"), message.get("epoch"))
        cached = encode_message(None, ref, message["topic"], message["event"], message["payload"])
        message[_ENCODED] = cached
    return cached


def parse_since(value: Any) -> StreamPosition:
    """A join's ``since``: a ref ``"<offset>:<epoch>"`` or ``{"offset", "epoch"}``.

    Raises ValueError saying what is wrong with it.
    """
    if isinstance(value, str):
        offset_text, sep, epoch = value.partition(":")
        if not sep or not offset_text.isdigit():
            raise ValueError(f"since must look like '<offset>:<epoch>', not {value!r}")
        return StreamPosition(int(offset_text), epoch)
    if isinstance(value, Mapping):
        offset, epoch_value = value.get("offset"), value.get("epoch")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"since.offset must be an int of 0 or more, not {offset!r}")
        if not isinstance(epoch_value, str):
            raise ValueError(f"since.epoch must be a string, not {epoch_value!r}")
        return StreamPosition(offset, epoch_value)
    raise ValueError(f"since must be a ref string or an object, not {type(value).__name__}")


def parse_last(value: Any) -> int:
    """A join's ``last``: how many of the newest messages to replay (0 when absent)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"last must be an int of 0 or more, not {value!r}")
    return value


def _metas(metas: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out = []
    for meta in metas:
        entry = {k: v for k, v in meta.items() if k != "ref"}
        entry["phx_ref"] = meta.get("ref")
        out.append(entry)
    return {"metas": out}


def presence_state(present: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``presence_state`` from the layer's listing (key -> metas, each with its ref)."""
    return {key: _metas(metas) for key, metas in present.items()}


def presence_diff_payload(diff: Mapping[str, Any]) -> dict[str, Any]:
    """``presence_diff`` from the layer's ``presence.diff`` event."""
    return {
        "joins": {key: _metas(metas) for key, metas in (diff.get("joins") or {}).items()},
        "leaves": {key: _metas(metas) for key, metas in (diff.get("leaves") or {}).items()},
    }
