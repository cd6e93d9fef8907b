"""Embed chanlite in a Django site: Django serves pages, chanlite takes the sockets.

``INSTALLED_APPS += ["chanlite.contrib.django"]``, ``CHANLITE = {"APP": "mysite.realtime:app"}``,
and in ``asgi.py``: ``application = get_asgi_application()``. Handlers read the ORM with
:func:`db`, know ``ws.user`` / ``ws.session``, and sync code pushes events with
:func:`group_send`, :func:`send` and :func:`broadcast`. See README.md beside this file.

Importing this package does not import Django; its functions import it when called.
"""

from __future__ import annotations

from chanlite.contrib.django.asgi import get_asgi_application
from chanlite.contrib.django.auth import login, logout
from chanlite.contrib.django.db import DBFunction, db
from chanlite.contrib.django.senders import broadcast, group_send, send

__all__ = [
    "DBFunction",
    "broadcast",
    "db",
    "get_asgi_application",
    "group_send",
    "login",
    "logout",
    "send",
]
