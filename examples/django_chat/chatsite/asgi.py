"""ASGI entry: chanlite takes the sockets, Django serves everything else."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from chanlite.contrib.django import get_asgi_application

application = get_asgi_application()
