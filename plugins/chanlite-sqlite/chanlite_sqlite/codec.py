"""Message payloads: msgpack, with errors that say which value could not be encoded.

msgpack keeps ``bytes`` as bytes (WebSocket frames travel untouched) and is several times
faster than JSON for the small dicts layers carry. Tuples come back as lists, as with every
Channels layer. An unencodable value raises :class:`TypeError` naming its place in the
message (``message['data']['when']``) *before* anything is written to the database.
"""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]

from chanlite.layers.base import Message

_packer_errors = (TypeError, ValueError, OverflowError)


def encode(message: Message) -> bytes:
    """Serialise *message*; raise ``TypeError`` naming the first value msgpack rejects."""
    try:
        payload: bytes = msgpack.packb(message, use_bin_type=True)
        # msgpack packs a tuple key as an array, which no receiver can turn back into a
        # dict key: check the round trip here rather than fail in every reader.
        msgpack.unpackb(payload, raw=False, strict_map_key=False)
        return payload
    except _packer_errors as exc:
        where, value = _find_unencodable(message, "message")
        if not where:
            raise TypeError(f"Cannot encode this message with msgpack: {exc}") from None
        raise TypeError(
            f"Cannot send this message through the SQLite channel layer: {where} is "
            f"{type(value).__name__} {_short_repr(value)}, which msgpack cannot encode "
            f"({exc}). Use str, bytes, int, float, bool, None, list or dict values."
        ) from None


def decode(payload: bytes) -> Message:
    """Deserialise a payload written by :func:`encode`."""
    message: Message = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return message


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _find_unencodable(value: Any, where: str) -> tuple[str, Any]:
    """Return ``(path, value)`` of the first part of *value* msgpack cannot pack."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, bytes, int, float, bool, type(None))) or not _packs(key):
                return f"the key {key!r} in {where}", key
            found = _find_unencodable(item, f"{where}[{key!r}]")
            if found[0]:
                return found
        return "", None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_unencodable(item, f"{where}[{index}]")
            if found[0]:
                return found
        return "", None
    if _packs(value):
        return "", None
    return where, value


def _packs(value: Any) -> bool:
    if isinstance(value, (dict, list, tuple)):
        return True  # containers are walked item by item
    try:
        msgpack.packb(value, use_bin_type=True)
    except _packer_errors:
        return False
    return True
