"""chanlite.contrib.channels: a Channels consumer's method for chanlite broadcasts.

The mixins meet real Channels consumers on real servers in test_stages.py; here, what
each sends for text, bytes and a broadcast that excludes the consumer itself.
"""

from __future__ import annotations

from typing import Any

from chanlite.broadcast import broadcast_event
from chanlite.contrib.channels import AsyncBroadcastMixin, BroadcastMixin


class Sent:
    channel_name = "specific.abc!def"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []


class AsyncConsumer(AsyncBroadcastMixin, Sent):
    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.sent.append({"text_data": text_data, "bytes_data": bytes_data})


class SyncConsumer(BroadcastMixin, Sent):
    def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.sent.append({"text_data": text_data, "bytes_data": bytes_data})


EVENTS = [
    broadcast_event(text="hi"),
    broadcast_event(json={"n": 1}),
    broadcast_event(bytes=b"\x00\x01"),
    broadcast_event(text="not to the sender", exclude=Sent.channel_name),
    broadcast_event(text="to the others", exclude="specific.abc!other"),
]
EXPECTED = [
    {"text_data": "hi", "bytes_data": None},
    {"text_data": '{"n":1}', "bytes_data": None},
    {"text_data": None, "bytes_data": b"\x00\x01"},
    {"text_data": "to the others", "bytes_data": None},
]


async def test_the_async_mixin_sends_each_frame_but_the_excluded_one() -> None:
    consumer = AsyncConsumer()
    for event in EVENTS:
        await consumer.chanlite_broadcast(event)
    assert consumer.sent == EXPECTED


def test_the_sync_mixin_sends_each_frame_but_the_excluded_one() -> None:
    consumer = SyncConsumer()
    for event in EVENTS:
        consumer.chanlite_broadcast(event)
    assert consumer.sent == EXPECTED


def test_the_method_is_the_one_channels_dispatches_a_broadcast_to() -> None:
    from channels.consumer import get_handler_name

    assert get_handler_name(broadcast_event(text="x")) == "chanlite_broadcast"
