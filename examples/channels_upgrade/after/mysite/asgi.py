"""ASGI entry: chanlite takes its routes (chat.realtime), Django serves everything else."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from chanlite.contrib.django import get_asgi_application

application = get_asgi_application()
