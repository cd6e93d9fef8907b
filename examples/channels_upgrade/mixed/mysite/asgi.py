"""ASGI entry of the mixed stage: chanlite's routes first (chat/realtime.py), then the
Channels router with the old consumers and Django (mysite/channels_asgi.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from chanlite.contrib.django import get_asgi_application

application = get_asgi_application()
