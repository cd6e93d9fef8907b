"""Message encoding: msgpack, optionally sealed with Fernet.

msgpack keeps ``bytes`` as bytes and ``str`` as str, so every payload type of the layer
contract round-trips. With ``symmetric_encryption_keys`` each payload is encrypted with
the first key and decrypted with any of them, so keys can be rotated by prepending the new
one on every process, then dropping the old one once no message sealed with it is left.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]

from chanlite.layers.base import LayerConfigError, Message


def _fernet_key(secret: str | bytes) -> bytes:
    # Any secret string works, as with channels_redis: hash it to Fernet's 32-byte key.
    raw = secret.encode() if isinstance(secret, str) else secret
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


class Codec:
    """Turns layer messages into bytes for Redis and back."""

    __slots__ = ("_fernet",)

    def __init__(self, symmetric_encryption_keys: Sequence[str | bytes] | None = None) -> None:
        self._fernet: Any = None
        if symmetric_encryption_keys:
            try:
                from cryptography.fernet import Fernet, MultiFernet
            except ImportError:
                raise LayerConfigError(
                    "symmetric_encryption_keys needs the cryptography package: "
                    "pip install 'chanlite-redis[crypto]'"
                ) from None
            self._fernet = MultiFernet(
                [Fernet(_fernet_key(key)) for key in symmetric_encryption_keys]
            )

    def encode(self, message: Message) -> bytes:
        """Serialise (and seal) *message*."""
        data: bytes = msgpack.packb(message, use_bin_type=True)
        if self._fernet is not None:
            sealed: bytes = self._fernet.encrypt(data)
            return sealed
        return data

    def decode(self, data: bytes | memoryview) -> Message:
        """Open and deserialise a payload; raises ``ValueError`` on anything malformed."""
        if self._fernet is not None:
            from cryptography.fernet import InvalidToken

            try:
                data = self._fernet.decrypt(bytes(data))
            except InvalidToken:
                raise ValueError("payload is not sealed with any configured key") from None
        try:
            message = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ValueError(f"payload is not valid msgpack: {exc}") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ValueError("payload is not a layer message (a dict with a 'type')")
        return message
