"""What a Redis layer process hears: group messages, wake-ups and control notices.

Every process with members in a group subscribes to the group's topic; one pub/sub
connection (one per node on a cluster) brings every message of every such group, each
behind a header naming the process that delivered it already, the sender and the
sender's number for it (:mod:`chanlite_redis.sequence`). :class:`Hearing` hands each to
the process's live members in one ``receive_local()`` item, counts what the numbering
says it missed (``lost``, with a WARNING), fills a history group's gap from its stream
after the connection came back (:mod:`chanlite_redis.catchup`), wakes receivers of plain
channels, and applies ``flush`` and remote ``discard`` notices.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

import msgpack  # type: ignore[import-untyped]

from chanlite.layers import LayerError, LocalInbox, Message, StreamPosition
from chanlite_redis import scripts, sequence
from chanlite_redis.catchup import CatchUp
from chanlite_redis.history import History, StampedCodec
from chanlite_redis.loops import LoopOwner
from chanlite_redis.plain import PlainChannels
from chanlite_redis.trailing import Trailing

logger = logging.getLogger("chanlite.layers.redis")

#: Width of a client_id. A published group message starts with a header: the id of the
#: process that delivered it to its own members already (or dashes), the sender's id and
#: the sender's number for the message in that group (:mod:`chanlite_redis.sequence`).
SENDER = 12
NOBODY = "-" * SENDER
HEADER = 2 * SENDER + sequence.WIDTH


class Hearing(LoopOwner):
    """The pub/sub side of :class:`~chanlite_redis.RedisLayer` (see the module)."""

    # Set up by the layer.
    keys: scripts.Keys
    lost: Counter[str]
    _codec: StampedCodec
    _sender_tag: bytes
    _group_topic_prefix: str
    _wake_topic_prefix: str
    _history: History
    _catchup: CatchUp
    _notices: deque[str]  # control notices already handled
    _local: LocalInbox
    _groups: dict[str, dict[str, float]]  # group -> {local channel: join time}, in order
    _gaps: sequence.Gaps
    _plain: PlainChannels | None
    _trailing: Trailing

    async def _subscribe(self, topic: str) -> None:
        raise NotImplementedError

    def _flush_local(self) -> None:
        raise NotImplementedError

    def _forget_member(self, group: str, channel: str) -> None:
        members = self._groups.get(group)
        if members is None or members.pop(channel, None) is None or members:
            return
        del self._groups[group]
        self._gaps.forget(group)
        if self._listener is not None:
            self._spawn(self._listener.unsubscribe(self.keys.group_topic(group)))

    def _on_pubsub(self, topic_raw: bytes, data: bytes) -> None:
        topic = topic_raw.decode()
        if topic.startswith(self._group_topic_prefix):
            self._on_group_message(topic[len(self._group_topic_prefix) : -1], data)
        elif topic.startswith(self._wake_topic_prefix):
            if self._plain is not None:
                self._plain.wake(topic[len(self._wake_topic_prefix) : -1])
        elif topic == self.keys.ctl:
            self._on_control(data)

    def _on_group_message(self, group: str, data: bytes) -> None:
        if data[:SENDER] == self._sender_tag:
            return  # sent from this process, which delivered it already
        members = self._live_members(group)
        if not members or len(data) < HEADER:
            return
        sender = data[SENDER : 2 * SENDER]
        if len(data) == HEADER:
            # A trailing marker (chanlite_redis.trailing): the sender's last number here.
            self._gaps.marked(group, sender, data[2 * SENDER : HEADER])
            return
        # Its own messages this process never misses.
        if sender != self._sender_tag and not self._gaps.heard(
            group, sender, data[2 * SENDER : HEADER]
        ):
            return  # counted as lost already
        try:
            message = self._codec.decode(memoryview(data)[HEADER:])
        except ValueError as exc:
            logger.error("Dropped a malformed message for group %r: %s", group, exc)
            return
        if data[HEADER] == 0 and not self._catchup.heard(group, message):
            return  # a history message held until what was missed before it is delivered
        full = self._local.offer(tuple(members), message, missed=True)
        self.count_drops(group, full, len(members))

    def _count_lost(self, group: str, n: int) -> None:
        self.lost[group] += n
        logger.warning(
            "%d messages to group %r were not heard by this process (its pub/sub connection "
            "was lost: Redis restarted, failed over, or cut it, or the group's cluster slot "
            "moved); they are lost for its members (%d in this group so far)",
            n,
            group,
            self.lost[group],
        )

    def _count_lost_direct(self, key: str, n: int) -> None:
        self.lost[key] += n
        logger.warning(
            "%d direct messages to this process's channels never reached its inbox (Redis "
            "lost them: it failed over or restarted after taking them, or the send raised; "
            "or they expired there unread); %d so far",
            n,
            self.lost[key],
        )

    def _deliver_group(self, group: str, message: Message) -> None:
        members = self._live_members(group)
        if members:
            full = self._local.offer(tuple(members), message, missed=True)
            self.count_drops(group, full, len(members))

    async def _read_missed(self, group: str, since: StreamPosition) -> list[Message]:
        policy = self.history_policy(group)
        if policy is None:
            return []
        return (await self._history.read(group, policy, since, None)).events

    def _start_catch_up(self) -> None:
        """Pub/sub was lost (or no loop listened): fill each history group's gap."""
        self._catchup.forget(self._groups)
        groups = [group for group in self._groups if self.history_policy(group) is not None]
        for group in self._catchup.pending(groups):
            self._spawn(self._catchup.run(group, self._subscriber(group)))

    def _subscriber(self, group: str) -> Callable[[], Awaitable[None]]:
        topic = self.keys.group_topic(group)
        return lambda: self._subscribe(topic)

    def _live_members(self, group: str) -> dict[str, float] | None:
        """This process's members of *group*, with expired memberships dropped."""
        members = self._groups.get(group)
        if not members:
            return None
        stale_before = time.monotonic() - self.group_expiry
        # Members are in join order, so expired memberships are at the front.
        if next(iter(members.values())) <= stale_before:
            for channel, joined in list(members.items()):
                if joined > stale_before:
                    break
                self._forget_member(group, channel)
            members = self._groups.get(group)
        return members

    def _on_control(self, data: bytes) -> None:
        try:
            command = msgpack.unpackb(data, raw=False)
            kind, sender = command[0], command[1]
        except Exception:
            logger.error("Ignored a malformed control message on %r", self.keys.ctl)
            return
        if sender == self.client_id or command[-1] in self._notices:
            return
        # Every node of a cluster relays the control topic: each notice is heard once.
        self._notices.append(command[-1])
        if kind == "flush":
            self._flush_local()
        elif kind == "tails":
            # A process listens again after losing pub/sub: markers it missed go again.
            self._trailing.again()
        elif kind == "discard" and len(command) == 5:
            group, channel = command[2], command[3]
            if isinstance(channel, str) and self.is_local(channel):
                self._forget_member(str(group), channel)

    def _on_reconnect(self) -> None:
        # Wake-ups may have been missed while disconnected: let plain receivers look again.
        if self._plain is not None:
            self._plain.wake_all()
        self._start_catch_up()
        # Losses at the end of others' messages are revealed by their trailing markers:
        # those sent while this process did not listen go again when it asks.
        self._spawn(self._ask_for_tails())
        self._trailing.again()

    async def _ask_for_tails(self) -> None:
        notice = msgpack.packb(["tails", self.client_id, secrets.token_hex(8)])
        try:
            await self._call("tails", lambda c: c.publish(self.keys.ctl, notice))
        except LayerError as exc:
            logger.debug("%r: could not ask for trailing markers: %s", self, exc)
