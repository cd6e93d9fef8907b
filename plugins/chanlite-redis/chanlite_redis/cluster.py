"""Pub/sub on a Redis Cluster: shard channels, one connection per node that holds ours.

On a cluster a ``PUBLISH`` goes to every node; ``SPUBLISH`` stays on the node that holds
the channel's slot. So a group's topic is a shard channel (``{p}g:{group}``, the slot of
the group's other keys), and a process listens with ``SSUBSCRIBE`` on the node of each
topic it wants: :class:`ShardedListener` keeps one :class:`~chanlite_redis.listener.Listener`
per such node, with the same interface as a single one.

The topology comes from redis-py's ``RedisCluster`` (the layer's command client). When a
node's connection fails (the node died; its replica is taking over) or the node moves a
channel away (``sunsubscribe`` for a slot that migrated), the slot map is read again and
every topic whose node changed is subscribed on its new node, every second until all of
them are back. The control topic (``flush``, remote discards) is an ordinary channel that
every node relays; each node listener subscribes to it and duplicates are ignored by the
layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from chanlite_redis.config import ClusterTarget, Pooled, Target
from chanlite_redis.errors import RedisUnavailable
from chanlite_redis.listener import Listener, OnMessage
from chanlite_redis.tasks import cancel_requested, raise_if_cancelled, stop

logger = logging.getLogger("chanlite.layers.redis")

#: Seconds between attempts to route topics anew while a node is unreachable.
REROUTE_EVERY = 0.5


class ShardedListener:
    """Shard-channel subscriptions spread over the cluster's nodes (see the module)."""

    def __init__(
        self,
        client: Redis,
        connect_to: Callable[[str, int, float], AbstractConnection],
        on_message: OnMessage,
        *,
        timeout: float,
        where: str = "",
        always: tuple[str, ...] = (),
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        # The layer's command client, a RedisCluster typed as the Redis it stands in for.
        self._cluster = cast(RedisCluster, client)
        self._connect_to = connect_to
        self._on_message = on_message
        self._timeout = timeout
        self._where = where
        self._always = always
        self._on_reconnect = on_reconnect
        self._nodes: dict[str, Listener] = {}
        self._route: dict[str, str] = {}  # topic -> name of the node it is subscribed on
        self._wanted: set[str] = set()
        self._reroute: asyncio.Task[None] | None = None
        self._reroute_soon: asyncio.Handle | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        """True while every node listener is connected."""
        return bool(self._nodes) and all(n.connected for n in self._nodes.values())

    @property
    def reconnects(self) -> int:
        return sum(n.reconnects for n in self._nodes.values())

    def kick(self) -> None:
        """Redis answers again: reconnect now rather than after backoff."""
        for node in self._nodes.values():
            node.kick()
        if any(not n.connected for n in self._nodes.values()):
            self._trouble()

    def start(self) -> None:
        """Connect to the node of the control topic (idempotent)."""
        if not self._nodes:
            self._trouble()

    def want(self, topics: Iterable[str]) -> None:
        """Listen to *topics* from now on, without waiting for it."""
        self._wanted.update(topics)
        self._trouble()

    async def subscribe(self, topic: str) -> None:
        """Subscribe to *topic* on its node and wait for the node's confirmation."""
        self._wanted.add(topic)
        node = await self._node_of(topic)
        old = self._route.get(topic)
        if old is not None and old != node.name and old in self._nodes:
            self._nodes[old].forget(topic)
        self._route[topic] = node.name
        try:
            await self._listener(node).subscribe(topic)
        except RedisUnavailable:
            self._wanted.discard(topic)
            self._route.pop(topic, None)
            self._trouble()  # the slot map may be stale: read it again
            raise

    async def unsubscribe(self, topic: str) -> None:
        """Stop listening to *topic*."""
        self._wanted.discard(topic)
        name = self._route.pop(topic, None)
        if name is not None and name in self._nodes:
            await self._nodes[name].unsubscribe(topic)

    async def _node_of(self, topic: str) -> ClusterNode:
        try:
            if self._cluster._initialize:  # not yet, or a command asked for a refresh
                await asyncio.wait_for(self._cluster.initialize(), self._timeout)
            return self._primary(topic)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            raise RedisUnavailable(
                f"Redis Cluster at {self._where} is unreachable ({exc or 'timed out'}); "
                "the layer reconnects by itself, retry later"
            ) from exc

    def _primary(self, topic: str) -> ClusterNode:
        node = self._cluster.get_node_from_key(topic)
        if node is None:
            raise RedisUnavailable(f"No node of {self._where} serves the slot of {topic!r}")
        return node

    def _listener(self, node: ClusterNode) -> Listener:
        listener = self._nodes.get(node.name)
        if listener is None:
            host, port = node.host, int(node.port)
            listener = self._nodes[node.name] = Listener(
                lambda: self._connect_to(host, port, self._timeout),
                self._on_message,
                timeout=self._timeout,
                where=f"{self._where} (node {node.name})",
                always=self._always,
                on_reconnect=self._on_reconnect,
                sharded=True,
                on_trouble=self._trouble,
            )
            listener.start()
        return listener

    def _trouble(self) -> None:
        """Route every wanted topic anew, in the background, until all are back."""
        if self._closed or cancel_requested():
            return  # a task being stopped: its loop may be ending
        task = self._reroute
        if task is None or task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: at collection
                loop = asyncio.get_running_loop()
                # Made when the loop next runs callbacks: a loop stopped before that
                # (async_to_sync ends its loop once its call returns) leaves no
                # coroutine behind that never ran.
                if self._reroute_soon is None:
                    self._reroute_soon = loop.call_soon(self._start_reroute)

    def _start_reroute(self) -> None:
        self._reroute_soon = None
        if not self._closed:
            self._reroute = asyncio.get_running_loop().create_task(self._reroute_all())

    async def _reroute_all(self) -> None:
        while True:
            await asyncio.sleep(0)
            try:
                await self._refresh()
            except (RedisError, OSError, asyncio.TimeoutError, RedisUnavailable) as exc:
                logger.debug("Redis Cluster pub/sub: reading the slot map failed: %s", exc)
            else:
                if self._settled():
                    return
            await asyncio.sleep(REROUTE_EVERY)

    async def _refresh(self) -> None:
        await asyncio.wait_for(self._cluster.initialize(), self._timeout)
        if self._nodes:
            # Something failed or moved: read the slot map again now (the client by
            # itself refreshes it only after one of its commands failed).
            await asyncio.wait_for(self._cluster.nodes_manager.initialize(), self._timeout)
        raise_if_cancelled()  # wait_for may swallow one; the loop may be ending
        primaries = {node.name: node for node in self._cluster.get_primaries()}
        if not self._nodes and not self._wanted:
            # Nothing to listen to yet: the control topic, on the node of its slot.
            for topic in self._always:
                self._listener(self._primary(topic))
        moves: list[Any] = []
        for topic in list(self._wanted):
            node = self._primary(topic)
            old = self._route.get(topic)
            listener = self._nodes.get(old) if old is not None else None
            if old == node.name and listener is not None and topic in listener.wanted:
                continue
            if listener is not None:
                listener.forget(topic)
            self._route[topic] = node.name
            target = self._listener(node)
            if target.connected:
                moves.append(self._move(topic, node))
            else:
                target.want([topic])  # subscribed with the others once connected
        for name in [n for n in self._nodes if n not in primaries]:
            listener = self._nodes[name]
            if not listener.wanted:  # a node gone from the map, nothing of ours left on it
                del self._nodes[name]
                await listener.close()
        for move in moves:
            await move

    async def _move(self, topic: str, node: ClusterNode) -> None:
        try:
            await self._listener(node).subscribe(topic)
            self._wanted.add(topic)  # subscribe() forgets a topic it failed on
            logger.info("Redis Cluster pub/sub: %r now heard from node %s", topic, node.name)
        except RedisUnavailable as exc:
            self._wanted.add(topic)
            logger.debug("Redis Cluster pub/sub: %r not subscribed yet: %s", topic, exc)

    def _settled(self) -> bool:
        return all(
            (name := self._route.get(topic)) is not None
            and name in self._nodes
            and self._nodes[name].connected
            for topic in self._wanted
        )

    async def close(self) -> None:
        """Stop every node listener and the rerouting."""
        self._closed = True
        if self._reroute is not None:
            await stop([self._reroute], self._timeout)
        for listener in list(self._nodes.values()):
            await listener.close()
        self._nodes.clear()


def make_listener(
    target: Target,
    client: Redis,
    on_message: OnMessage,
    *,
    timeout: float,
    always: tuple[str, ...],
    on_reconnect: Callable[[], None],
) -> Listener | ShardedListener:
    """The pub/sub listener for *target*: one connection, or one per cluster node.

    *client* is the loop's command client (a cluster's tells where each topic lives).
    """
    if isinstance(target, ClusterTarget):
        return ShardedListener(
            client,
            target.connection_to,
            on_message,
            timeout=timeout,
            where=target.where,
            always=always,
            on_reconnect=on_reconnect,
        )
    assert isinstance(target, Pooled)
    pool = target.pool(timeout=timeout, blocking=True)
    return Listener(
        pool.make_connection,
        on_message,
        timeout=timeout,
        where=target.where,
        always=always,
        on_reconnect=on_reconnect,
        on_close=pool.disconnect,
    )


async def queue_copies(
    reply: list[bytes], queue: Callable[[str, bytes, int], Awaitable[bool]]
) -> list[bytes]:
    """On a cluster: queue the copies for members recorded in Redis, each on its own
    slot. *reply* is the group script's (``\\2<payload>`` then ``\\1<capacity> <channel>``
    per member); *queue* stores one copy (the ``SEND`` script), False when full.
    Returns the channels that were full."""
    payload = reply[0][1:]
    copies = [entry[1:].decode().partition(" ") for entry in reply[1:]]
    stored = await asyncio.gather(*(queue(ch, payload, int(cap)) for cap, _, ch in copies))
    return [ch.encode() for (_, _, ch), ok in zip(copies, stored, strict=True) if not ok]
