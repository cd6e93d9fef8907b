"""Blocking senders for Django code: views, signals, management commands, Celery tasks.

::

    from chanlite.contrib.django import broadcast, group_send

    def announce(request):                       # a plain sync view, under WSGI or ASGI
        broadcast("everyone", json={"text": request.POST["text"]})
        group_send("chat.lobby", {"type": "chat.message", "text": "hi"})

They go through ``CHANLITE["LAYER"]``. In the process serving the chanlite App, the call
is handed to the App's own loop (so even ``memory://`` works there); anywhere else it goes
through a private loop to the shared layer, e.g. SQLite from a WSGI worker into a separate
``manage.py chanlite`` process. Do not call them on an event loop thread (an async view):
there, ``await app.group_send(...)``.
"""

from __future__ import annotations

import logging
from typing import Any

from chanlite.contrib.django import conf
from chanlite.layers.base import Event
from chanlite.sync import SyncSender

logger = logging.getLogger("chanlite.contrib.django")
_warned = False


def _sender() -> SyncSender:
    global _warned
    from chanlite.contrib.django.asgi import current_app

    app = current_app()
    if app is not None:
        return SyncSender(app)
    url = conf.get().layer
    if url.startswith("memory:") and not _warned:
        _warned = True
        logger.warning(
            "Sending through memory:// from a process that does not serve the chanlite App "
            "reaches no socket; set CHANLITE['LAYER'] to a shared layer such as sqlite:///..."
        )
    return SyncSender(url)


def send(channel: str, event: Event) -> None:
    """Send *event* to one connection's channel (its ``on`` handler)."""
    _sender().send(channel, event)


def group_send(group: str, event: Event) -> None:
    """Send *event* to the ``on`` handlers of every member of *group*."""
    _sender().group_send(group, event)


def broadcast(
    group: str,
    *,
    text: str | None = None,
    bytes: bytes | None = None,
    json: Any = None,
) -> None:
    """Write one frame (exactly one of text/bytes/json) to every member socket of *group*."""
    _sender().broadcast(group, text=text, bytes=bytes, json=json)
