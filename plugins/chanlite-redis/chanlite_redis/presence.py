"""Presence on Redis: entries that expire with the process holding them.

Each group has a hash of entries (channel -> key, owner process, meta), a count per key
(so "first" and "last" need no scan), a sorted set of the processes holding entries
scored by their last refresh (server clock), and one set per process of the channels it
holds there. All of them carry the group as hash tag (see :mod:`.stream_scripts`).

Every layer object refreshes its groups every ``presence_timeout / 3`` seconds; the same
call sweeps the group: the entries of any process whose last refresh is
``presence_timeout`` old are removed in one script, so exactly one sweeper gets them and
sends their leave diffs, once. A process that was swept while still alive (an outage
longer than the timeout, Redis restarted without its data) finds itself missing at its
next refresh and joins its entries again, announcing them anew.

Diffs go to the group's members through the layer's normal group delivery (the
``send_diff`` callable); they are not recorded in a history group's stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT

from chanlite.layers import (
    Codec,
    Event,
    LayerError,
    check_presence,
    presence_diff,
    with_ref,
)
from chanlite_redis import stream_scripts
from chanlite_redis.stream_scripts import StreamKeys

logger = logging.getLogger("chanlite.layers.redis")

Call = Callable[[str, Callable[[Redis], Awaitable[Any]]], Awaitable[Any]]
SendDiff = Callable[[str, Event], Awaitable[None]]

#: Type of the wrapper event a meta is stored in (the codec reads only events).
_META = "presence.meta"


class Entry:
    """One stored presence entry, parsed."""

    __slots__ = ("client", "key", "meta", "seq")

    def __init__(self, raw: bytes, codec: Codec) -> None:
        start = 16 + int(raw[12:16])  # the key's length in bytes
        self.seq = raw[:12]
        self.key = raw[16:start].decode()
        self.client = raw[start : start + 12].decode()
        stored = codec.decode(memoryview(raw)[start + 12 :])
        meta = stored.get("meta")
        self.meta: dict[str, Any] = meta if isinstance(meta, dict) else {}


class Presence:
    """One layer object's presence entries in Redis, and the refresh that keeps them."""

    def __init__(
        self,
        *,
        prefix: str,
        client_id: str,
        codec: Codec,
        call: Call,
        send_diff: SendDiff,
        timeout: float,
    ) -> None:
        self.keys = StreamKeys(prefix)
        self._prefix = prefix
        self._client_id = client_id
        self._codec = codec
        self._call = call
        self._send_diff = send_diff
        self.timeout = timeout
        self._timeout_ms = max(1, int(timeout * 1000))
        # Keys outlive three timeouts without a refresh: long enough that a live sweeper
        # always gets to a dead process's entries first, short enough that a group whose
        # processes all died leaves nothing behind.
        self._keep_ms = self._timeout_ms * 3
        #: group -> {channel: (key, meta)}: what this process holds, to refresh, to join
        #: again after being swept, and to leave on close.
        self.mine: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
        # Bumped by forget(): a refresh under way when the entries were flushed must not
        # join them again.
        self._generation = 0

    def _keys(self, group: str) -> list[str]:
        return [*self.keys.presence(group), self.keys.owned(group, self._client_id)]

    # -- join / leave / list ---------------------------------------------------------------

    async def join(self, group: str, channel: str, key: str, meta: dict[str, Any]) -> None:
        """Add or update *channel*'s entry and send the diffs (see BaseLayer)."""
        check_presence(key, meta, self._codec.encode)
        stored = self._codec.encode({"type": _META, "meta": meta})
        # What listeners see: the meta as every reader decodes it, with its ref.
        entry = with_ref(self._codec.decode(stored)["meta"], channel)
        keys = self._keys(group)
        args: list[EncodableT] = [
            self._prefix, group, channel, key, self._client_id, stored, self._keep_ms
        ]  # fmt: skip
        script = stream_scripts.PRESENCE_JOIN
        previous, left_last, first, updated = await self._call(
            "presence_join", lambda c: script(c, keys, args)
        )
        mine = self.mine.get(group)
        registered = mine is not None
        if mine is None:
            mine = self.mine[group] = {}
        mine[channel] = (key, meta)
        if not registered:
            # (Should this fail, the next refresh registers the group all the same.)
            await self._registered(group)
        diffs: list[Event] = []
        old = self._parse(previous) if previous is not None else None
        if updated:
            leaves = {key: [with_ref(old.meta, channel)]} if old is not None else {}
            diffs.append(presence_diff(group, joins={key: [entry]}, leaves=leaves))
        else:
            if old is not None:
                diffs.append(self._leave_diff(group, channel, old, left_last == 1))
            diffs.append(presence_diff(group, joins={key: [entry]}, first=first == 1))
        for diff in diffs:
            await self._send_diff(group, diff)

    async def leave(self, group: str, channel: str) -> None:
        """Remove *channel*'s entry, sending its leave diff; nothing if absent."""
        keys = self.keys.presence(group)[:3]
        args: list[EncodableT] = [self._prefix, group, channel, self._client_id]
        script = stream_scripts.PRESENCE_LEAVE
        reply = await self._call("presence_leave", lambda c: script(c, keys, args))
        mine = self.mine.get(group)
        if mine is not None:
            mine.pop(channel, None)
            if not mine:
                del self.mine[group]
                groups = self.keys.groups_of(self._client_id)
                await self._call("presence_leave", lambda c: c.srem(groups, group))
        if reply is None:
            return
        previous, last = reply
        entry = self._parse(previous)
        if entry is not None:
            await self._send_diff(group, self._leave_diff(group, channel, entry, last == 1))

    def _leave_diff(self, group: str, channel: str, entry: Entry, last: bool) -> Event:
        return presence_diff(group, leaves={entry.key: [with_ref(entry.meta, channel)]}, last=last)

    async def listing(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """key -> metas (each with "ref"), in join order; dead processes swept first."""
        keys = self.keys.presence(group)[:3]
        args: list[EncodableT] = [self._prefix, group, self._timeout_ms]
        script = stream_scripts.PRESENCE_LIST
        removed, blob = await self._call("presence", lambda c: script(c, keys, args))
        await self._announce_removed(group, removed)
        decode = self._codec.decode
        entries: list[tuple[bytes, str, dict[str, Any]]] = []
        view, at, end = memoryview(blob), 0, len(blob)
        while at < end:
            size = int(view[at : at + 8])
            channel = str(view[at + 8 : at + 8 + size], "utf-8")
            at += 8 + size
            size = int(view[at : at + 8])
            raw = view[at + 8 : at + 8 + size]
            at += 8 + size
            # <12-digit seq><4-digit key length><key><12-char owner><meta payload>
            try:
                start = 16 + int(raw[12:16])
                meta = decode(raw[start + 12 :]).get("meta")
                key = str(raw[16:start], "utf-8")
            except ValueError as exc:  # DecodeError and UnicodeDecodeError included
                _unreadable(group, channel, exc)
                continue
            entry = dict(meta) if isinstance(meta, dict) else {}
            entry["ref"] = channel
            entries.append((raw[:12].tobytes(), key, entry))
        entries.sort(key=lambda item: item[0])
        listing: dict[str, list[dict[str, Any]]] = {}
        for _, key, meta in entries:
            listing.setdefault(key, []).append(meta)
        return listing

    # -- liveness ----------------------------------------------------------------------------

    async def _registered(self, group: str) -> None:
        """Note in the process registry that this process holds entries in *group*."""
        keys = [self.keys.processes(), self.keys.groups_of(self._client_id)]
        args: list[EncodableT] = [self._client_id, group, self._keep_ms]
        script = stream_scripts.PROCESS_JOINED
        await self._call("presence_join", lambda c: script(c, keys, args))

    async def refresh(self) -> None:
        """Refresh this process's entries, then sweep the groups of processes found dead.

        One round trip refreshes every group this process holds entries in (sweeping
        them on the way) and asks the process registry for silent processes; a second
        one, only when there are any, sweeps their groups. Groups where this process was
        found missing get its entries joined again.
        """
        mine = list(self.mine)
        generation = self._generation
        registry = [self.keys.processes(), self.keys.groups_of(self._client_id)]
        beat = stream_scripts.PRESENCE_BEAT
        process_beat = stream_scripts.PROCESS_BEAT

        def beat_args(group: str, holds: bool) -> list[EncodableT]:
            return [
                self._prefix, group, self._client_id, self._keep_ms, self._timeout_ms,
                1 if holds else 0,
            ]  # fmt: skip

        async def first(client: Redis) -> list[Any]:
            for script in (beat, process_beat):
                await client.script_load(script.text)
            async with client.pipeline(transaction=False) as pipe:
                args: list[EncodableT] = [
                    self._prefix, self._client_id, 1 if mine else 0, self._timeout_ms,
                    self._keep_ms, *mine,
                ]  # fmt: skip
                pipe.evalsha(process_beat.sha, 2, *registry, *args)
                for group in mine:
                    pipe.evalsha(beat.sha, 5, *self._keys(group), *beat_args(group, True))
                return list(await pipe.execute())

        replies = await self._call("presence refresh", first)
        dead, replies = replies[0], replies[1:]
        for group, reply in zip(mine, replies, strict=True):
            missing, removed = reply[0], reply[1:]
            await self._announce_removed(group, removed)
            if missing and group in self.mine and generation == self._generation:
                logger.warning(
                    "Presence entries of this process in group %r were gone from Redis "
                    "(swept after a long silence, or Redis lost its data); joining them again",
                    group,
                )
                await self._registered(group)
                for channel, (key, meta) in list(self.mine[group].items()):
                    await self.join(group, channel, key, meta)
        if dead:
            await self._sweep_dead(dead)

    async def _sweep_dead(self, dead: list[Any]) -> None:
        """Sweep every group of the silent processes in *dead*, then forget them."""
        processes: list[tuple[str, list[str]]] = [
            (dead[i].decode(), sorted(g.decode() for g in dead[i + 1]))
            for i in range(0, len(dead), 2)
        ]
        groups = sorted({group for _, groups in processes for group in groups})
        beat = stream_scripts.PRESENCE_BEAT
        reap = stream_scripts.PROCESS_REAP

        async def sweep(client: Redis) -> list[Any]:
            for script in (beat, reap):
                await client.script_load(script.text)
            async with client.pipeline(transaction=False) as pipe:
                for group in groups:
                    args: list[EncodableT] = [
                        self._prefix, group, self._client_id, self._keep_ms, self._timeout_ms, 0
                    ]  # fmt: skip
                    pipe.evalsha(beat.sha, 5, *self._keys(group), *args)
                for client_id, _ in processes:
                    keys = [self.keys.processes(), self.keys.groups_of(client_id)]
                    pipe.evalsha(reap.sha, 2, *keys, client_id, self._timeout_ms)
                return list(await pipe.execute())

        replies = await self._call("presence sweep", sweep)
        for group, reply in zip(groups, replies, strict=False):
            await self._announce_removed(group, reply[1:])

    async def _announce_removed(self, group: str, removed: list[Any]) -> None:
        for i in range(0, len(removed), 3):
            channel = removed[i].decode()
            entry = self._parse(removed[i + 1], group, channel)
            if entry is not None:
                await self._send_diff(
                    group, self._leave_diff(group, channel, entry, removed[i + 2] == 1)
                )

    async def run(self) -> None:
        """Refresh every ``timeout / 3`` seconds until cancelled; Redis trouble is logged."""
        while True:
            await asyncio.sleep(self.timeout / 3)
            try:
                await self.refresh()
            except LayerError as exc:
                logger.warning("Presence refresh failed (retrying): %s", exc)

    def forget(self) -> None:
        """Drop this process's entries from memory only (they were deleted in Redis)."""
        self.mine.clear()
        self._generation += 1

    async def drop_all(self) -> None:
        """Remove every entry this process holds (it is closing), sending the leave diffs."""
        for group in list(self.mine):
            removed = await self._call("close", self._dropper(group))
            del self.mine[group]
            await self._announce_removed(group, removed)
        processes, groups = self.keys.processes(), self.keys.groups_of(self._client_id)

        async def forget(client: Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.zrem(processes, self._client_id)
                pipe.delete(groups)
                await pipe.execute()

        await self._call("close", forget)

    def _dropper(self, group: str) -> Callable[[Redis], Awaitable[Any]]:
        keys = [*self.keys.presence(group)[:3], self.keys.owned(group, self._client_id)]
        args: list[EncodableT] = [self._prefix, group, self._client_id]
        return lambda client: stream_scripts.PRESENCE_DROP(client, keys, args)

    def _parse(self, raw: bytes, group: str = "", channel: str = "") -> Entry | None:
        try:
            return Entry(raw, self._codec)
        except ValueError as exc:  # DecodeError and UnicodeDecodeError included
            _unreadable(group, channel, exc)
            return None


def _unreadable(group: str, channel: str, exc: Exception) -> None:
    # Another process's entry this one cannot read (another encryption key, say): the
    # rest of the listing or the diffs still go out.
    logger.error("Skipped an unreadable presence entry of %r in group %r: %s", channel, group, exc)
