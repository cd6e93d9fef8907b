"""Django Channels consumers that share groups with chanlite sockets.

While a project moves from Channels to chanlite, its consumers and chanlite's handlers
can sit in the same groups on one layer (a chanlite layer is a Channels
``CHANNEL_LAYERS`` backend). Events sent with ``group_send`` reach both kinds alike. A
*broadcast* (``app.broadcast``, ``chanlite.contrib.django.broadcast``, ``chanlite send
--broadcast-text``) is different: it is one layer event of type ``"chanlite.broadcast"``
that chanlite writes straight to its sockets as a ready frame. Channels calls a consumer
method ``chanlite_broadcast()`` for that type; a consumer without one raises
``ValueError: No handler for message type chanlite.broadcast`` and its socket closes.

Mix :class:`AsyncBroadcastMixin` (``AsyncWebsocketConsumer``,
``AsyncJsonWebsocketConsumer``) or :class:`BroadcastMixin` (``WebsocketConsumer``,
``JsonWebsocketConsumer``) into each consumer whose groups get broadcasts, and it sends
the frame to its client as a chanlite socket would::

    class ChatConsumer(AsyncBroadcastMixin, AsyncWebsocketConsumer): ...

Importing this module does not import Channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AsyncBroadcastMixin", "BroadcastMixin"]


def _frame(consumer_channel: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The ``send()`` keywords for a broadcast *event*, or None if it excludes this
    consumer (the sender's own socket)."""
    if event.get("exclude") == consumer_channel:
        return None
    text = event.get("text")
    if text is not None:
        return {"text_data": text}
    return {"bytes_data": bytes(event.get("bytes") or b"")}


class AsyncBroadcastMixin:
    """Takes chanlite broadcasts in an async Channels WebSocket consumer."""

    if TYPE_CHECKING:
        channel_name: str

        async def send(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None: ...

    async def chanlite_broadcast(self, event: dict[str, Any]) -> None:
        """Send the broadcast's text or bytes to this consumer's client, as a frame."""
        frame = _frame(self.channel_name, event)
        if frame is not None:
            await self.send(**frame)


class BroadcastMixin:
    """Takes chanlite broadcasts in a sync Channels WebSocket consumer."""

    if TYPE_CHECKING:
        channel_name: str

        def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None: ...

    def chanlite_broadcast(self, event: dict[str, Any]) -> None:
        """Send the broadcast's text or bytes to this consumer's client, as a frame."""
        frame = _frame(self.channel_name, event)
        if frame is not None:
            self.send(**frame)
