"""Payload encoding: chanlite's msgpack codec, optionally sealed with Fernet.

:func:`make_codec` gives :class:`~chanlite.layers.MsgpackCodec` unless
``symmetric_encryption_keys`` are configured; then :class:`FernetCodec` seals each payload
with the first key and opens it with any of them, so keys can be rotated by prepending the
new one on every process, then dropping the old one once no message sealed with it is
left. Both follow the toolkit's codec rules: ``encode`` raises ``TypeError`` naming a bad
value, ``decode`` raises only :class:`~chanlite.layers.DecodeError`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

from chanlite.layers import Codec, DecodeError, Event, LayerConfigError, MsgpackCodec


def _fernet_key(secret: str | bytes) -> bytes:
    # Any secret string works, as with channels_redis: hash it to Fernet's 32-byte key.
    raw = secret.encode() if isinstance(secret, str) else secret
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


class FernetCodec:
    """msgpack payloads sealed with Fernet (``cryptography``'s ``MultiFernet``)."""

    __slots__ = ("_fernet", "_inner", "_invalid")

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        try:
            from cryptography.fernet import Fernet, InvalidToken, MultiFernet
        except ImportError:
            raise LayerConfigError(
                "symmetric_encryption_keys needs the cryptography package: "
                "pip install 'chanlite-redis[crypto]'"
            ) from None
        self._fernet: Any = MultiFernet([Fernet(_fernet_key(key)) for key in keys])
        self._invalid: type[Exception] = InvalidToken
        self._inner = MsgpackCodec()

    def encode(self, event: Event) -> bytes:
        """Serialise and seal *event*."""
        sealed: bytes = self._fernet.encrypt(self._inner.encode(event))
        return sealed

    def decode(self, data: bytes | memoryview) -> Event:
        """Open and deserialise a payload; raises :class:`DecodeError` on anything else."""
        try:
            opened: bytes = self._fernet.decrypt(bytes(data))
        except (self._invalid, TypeError, ValueError):
            raise DecodeError("payload is not sealed with any configured key") from None
        return self._inner.decode(opened)


def make_codec(symmetric_encryption_keys: Sequence[str | bytes] | None = None) -> Codec:
    """The layer's codec: sealed if keys are given, plain msgpack otherwise."""
    if symmetric_encryption_keys:
        return FernetCodec(symmetric_encryption_keys)
    return MsgpackCodec()
