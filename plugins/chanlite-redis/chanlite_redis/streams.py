"""History and presence on a Redis layer: the public calls, over
:mod:`chanlite_redis.history` (streams, offsets, epochs) and :mod:`chanlite_redis.presence`
(entries refreshed by their process, swept when it dies).

Presence is refreshed and swept by a task on the owning event loop, started once presence
is used; a call from a sync caller's private loop leaves that to the owning loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chanlite.layers import HistoryPage, StreamPosition
from chanlite_redis.hearing import Hearing
from chanlite_redis.presence import Presence


class Streams(Hearing):
    """The history and presence side of :class:`~chanlite_redis.RedisLayer`."""

    # Set up by the layer.
    _presence: Presence
    _presence_task: asyncio.Task[None] | None

    async def history(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The retained messages of history group *group*, oldest first (one Redis call).

        With *since*: exactly the messages after it, or
        :class:`~chanlite.layers.HistoryGap` (``"epoch"`` when Redis lost the stream).
        """
        policy = self.require_history(group)
        return await self._history.read(group, policy, since, limit)

    async def stream_position(self, group: str) -> StreamPosition:
        """The current position of history group *group*."""
        return await self._history.position(group, self.require_history(group))

    async def presence_join(self, group: str, channel: str, key: str, meta: dict[str, Any]) -> None:
        """Announce *channel* in *group* as *key* with *meta*; one diff to the members.

        The entry lives while this layer object refreshes it (every ``presence_timeout``
        / 3 s); raises :class:`~chanlite.layers.PresenceError` for a bad key or meta.
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._start_presence()
        await self._presence.join(group, channel, key, meta)

    async def presence_leave(self, group: str, channel: str) -> None:
        """Remove *channel*'s presence in *group* (no error if absent)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._presence.leave(group, channel)

    async def presence(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """Who is present in *group*, across processes: key -> metas with ``"ref"``."""
        self.require_valid_group_name(group)
        self._start_presence()
        return await self._presence.listing(group)

    def _start_presence(self) -> None:
        """Refresh and sweep in the background, on the owning loop, once presence is used."""
        if not self._is_home(asyncio.get_running_loop()):
            # A sync caller's private loop: the owning loop (alive) keeps the entries.
            if self._home is not None and not self._home.is_closed():
                self._home.call_soon_threadsafe(self._start_presence)
            return
        task = self._presence_task
        if task is None or task.done():
            self._presence_task = asyncio.ensure_future(self._presence.run())
