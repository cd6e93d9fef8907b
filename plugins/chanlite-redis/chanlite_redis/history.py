"""History on Redis Streams: offsets assigned in Redis, one encoding per message.

A ``group_send`` to a history group is one script call (``HISTORY_SEND``) that takes the
group's next offset, stores the message in the group's stream (``XADD`` with an exact
``MAXLEN``; entries older than the ttl trimmed from the head), and then delivers it the
way a plain ``group_send`` does. The payload the sender encoded once is *stamped* in
the script, ``\\0<offset> <epoch> <group>\\0<payload>``, and the stamped bytes are what
is stored, published and queued, so an offset and its stored entry never disagree.
:class:`StampedCodec` reads both forms: a stamped payload decodes to
``{**message, "offset": n, "epoch": e, "group": g}`` (a msgpack event or a Fernet token
never starts with a zero byte, so plain payloads are told apart by their first byte).

Reading (:meth:`History.read`) is one script call as well: the position, the oldest
retained offset and the entries after ``since`` come from one atomic look, and
:func:`chanlite.layers.check_since` decides whether they are the whole answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT

from chanlite.layers import (
    Codec,
    DecodeError,
    Event,
    HistoryPage,
    HistoryPolicy,
    StreamPosition,
    check_limit,
    check_position,
    check_since,
)
from chanlite_redis import stream_scripts
from chanlite_redis.scripts import for_cluster
from chanlite_redis.stream_scripts import Script, StreamKeys

#: Runs one Redis command: ``call(what, run)`` with ``run(client)`` doing the work.
Call = Callable[[str, Callable[[Redis], Awaitable[Any]]], Awaitable[Any]]


class StampedCodec:
    """The layer's codec, also reading payloads stamped with a stream position."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Codec) -> None:
        self._inner = inner

    def encode(self, event: Event) -> bytes:
        """Encode *event* with the wrapped codec (stamps are added in Redis)."""
        return self._inner.encode(event)

    def decode(self, data: bytes | memoryview) -> Event:
        """Decode a plain or stamped payload; raises only :class:`DecodeError`."""
        if not data or data[0] != 0:
            return self._inner.decode(data)
        view = memoryview(data)
        end = bytes(view[1:160]).find(b"\0")
        if end < 0:
            raise DecodeError("stamped payload without the end of its stamp")
        try:
            offset_text, epoch, group = bytes(view[1 : end + 1]).decode().split(" ")
            offset = int(offset_text)
        except (UnicodeDecodeError, ValueError):
            raise DecodeError("stamped payload with a malformed stamp") from None
        event = self._inner.decode(view[end + 2 :])
        event["offset"] = offset
        event["epoch"] = epoch
        event["group"] = group
        return event


class History:
    """The history of a layer's groups in Redis: sending into streams and reading them.

    Takes what it needs from its layer: the key prefix, the codec (a
    :class:`StampedCodec`), a way to run commands and how long idle history is kept.
    """

    def __init__(
        self, *, prefix: str, codec: Codec, call: Call, keep: float, cluster: bool = False
    ) -> None:
        self.keys = StreamKeys(prefix)
        # On a cluster the group's topic is a shard channel (SPUBLISH).
        send = stream_scripts.HISTORY_SEND
        self._send_script = Script(for_cluster(send.text)) if cluster else send
        self._codec = codec
        self._call = call
        #: How long a group's history outlives its last message or read (ms).
        self._keep_ms = max(1, int(keep * 1000))

    def _keep(self, policy: HistoryPolicy) -> int:
        ttl = int(policy.ttl * 1000) if policy.ttl is not None else 0
        return max(self._keep_ms, ttl)

    async def send(
        self, group: str, policy: HistoryPolicy, keys: list[str], args: list[EncodableT]
    ) -> tuple[int, str, list[bytes]]:
        """Run ``HISTORY_SEND``: *keys* and *args* are those of ``GROUP_SEND``.

        Returns ``(offset, epoch, channels dropped for being full)``.
        """
        all_keys = [*keys, *self.keys.history(group)]
        all_args = [
            *args,
            secrets.token_hex(8),
            policy.size,
            _ms(policy.ttl) if policy.ttl is not None else 0,
            self._keep(policy),
            group,
        ]
        script = self._send_script
        reply = await self._call("group_send", lambda c: script(c, all_keys, all_args))
        offset, _, epoch = reply[0].decode().partition(" ")
        return int(offset), epoch, reply[1:]

    async def position(self, group: str, policy: HistoryPolicy) -> StreamPosition:
        """The group's current position (creating its epoch if it has none yet)."""
        reply = await self._read(group, policy, ["position", 0, "", -1])
        return StreamPosition(int(reply[1]), reply[0].decode())

    async def read(
        self,
        group: str,
        policy: HistoryPolicy,
        since: StreamPosition | None,
        limit: int | None,
    ) -> HistoryPage:
        """See :meth:`chanlite.layers.BaseLayer.history`."""
        limit = check_limit(limit)
        wanted = -1 if limit is None else limit
        if since is None:
            reply = await self._read(group, policy, ["all", 0, "", wanted])
        else:
            check_position(since)
            reply = await self._read(group, policy, ["since", since.offset, since.epoch, wanted])
        position = StreamPosition(int(reply[1]), reply[0].decode())
        if since is not None:
            oldest = int(reply[2]) if reply[2] is not None else None
            check_since(group, since, position, oldest)
        decode = self._codec.decode
        events = [decode(payload) for payload in reply[3:]]
        return HistoryPage(events, position)

    async def _read(self, group: str, policy: HistoryPolicy, args: Sequence[EncodableT]) -> Any:
        keys = self.keys.history(group)
        all_args = [
            secrets.token_hex(8),
            _ms(policy.ttl) if policy.ttl is not None else 0,
            self._keep(policy),
            *args,
        ]
        script = stream_scripts.HISTORY_READ
        return await self._call("history", lambda c: script(c, keys, all_args))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
