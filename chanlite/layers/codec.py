"""Turning events into bytes and back: the one codec shape every backend uses.

A backend that stores or ships events (a file, a server) holds a :class:`Codec`:

* ``encode(event) -> bytes`` raises ``TypeError`` naming the first value it cannot
  encode (``message['data']['when'] is datetime ...``), *before* anything is written;
* ``decode(data) -> event`` raises :class:`~chanlite.layers.base.DecodeError` (also a
  ``ValueError``) for anything that is not an event this codec wrote: malformed,
  truncated, foreign or not a dict with a string ``"type"``. Nothing else escapes it, so
  a reader can skip a bad payload with one ``except DecodeError``.

:class:`MsgpackCodec` is the codec both plugins use: msgpack keeps ``bytes`` as bytes
(WebSocket frames travel untouched) and ``str`` as str, and is several times faster than
JSON for the small dicts layers carry. Tuples come back as lists, as with every Channels
layer. A codec that seals payloads (encryption) wraps it and keeps the two rules.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgpack  # type: ignore[import-untyped]

from chanlite.layers.base import Event
from chanlite.layers.errors import DecodeError

_PACK_ERRORS = (TypeError, ValueError, OverflowError)


@runtime_checkable
class Codec(Protocol):
    """What a backend needs to store events as bytes."""

    def encode(self, event: Event) -> bytes:
        """Serialise *event*; raise ``TypeError`` naming the first value it cannot encode."""

    def decode(self, data: bytes | memoryview) -> Event:
        """Deserialise *data*; raise :class:`DecodeError` (only) if it is not an event."""


class MsgpackCodec:
    """Events as msgpack, checked on the way in and on the way out."""

    __slots__ = ("_packer",)

    def __init__(self) -> None:
        self._packer: Any = None

    def check(self, event: Event) -> None:
        """Raise the ``TypeError`` :meth:`encode` would for a value msgpack cannot pack.

        For a layer that keeps events as objects (``memory://``), so it refuses what the
        layers that store bytes refuse, with the same message. It packs with one reused
        packer and keeps nothing (a few hundred nanoseconds for a small event; the round
        trip of :meth:`encode_copy` costs about three times more), so the one thing it
        does not see is a tuple used as a dict key, which msgpack packs but no reader can
        turn back into a key. One codec object per thread (the packer is not shared).
        """
        packer = self._packer
        if packer is None:
            packer = self._packer = msgpack.Packer(use_bin_type=True)
        try:
            packer.pack(event)
        except _PACK_ERRORS as exc:
            raise _refusal(event, exc) from None

    def encode(self, event: Event) -> bytes:
        """Serialise *event*; raise ``TypeError`` naming the first value msgpack rejects."""
        return self.encode_copy(event)[0]

    def encode_copy(self, event: Event) -> tuple[bytes, Event]:
        """``(payload, what a receiver will decode)``: the payload and an independent copy.

        msgpack packs a tuple dict key as an array, which no receiver can turn back into
        a key: the round trip checks it here rather than fail in every reader, and the
        decoded copy is what a backend hands to its local receivers (no second decode).
        """
        try:
            payload: bytes = msgpack.packb(event, use_bin_type=True)
            copy: Event = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            return payload, copy
        except _PACK_ERRORS as exc:
            raise _refusal(event, exc) from None

    def decode(self, data: bytes | memoryview) -> Event:
        """Deserialise *data*; raise :class:`DecodeError` if it is not an event."""
        try:
            event = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise DecodeError(f"payload is not valid msgpack: {exc}") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise DecodeError("payload is not a layer event (a dict with a string 'type')")
        return event


def _refusal(event: Event, exc: BaseException) -> TypeError:
    where, value = _find_unencodable(event, "message")
    if not where:
        return TypeError(f"Cannot encode this message with msgpack: {exc}")
    return TypeError(
        f"Cannot send this message through the channel layer: {where} is "
        f"{type(value).__name__} {_short_repr(value)}, which msgpack cannot encode "
        f"({exc}). Use str, bytes, int, float, bool, None, list or dict values."
    )


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
    except _PACK_ERRORS:
        return False
    return True
