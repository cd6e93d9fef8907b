"""Settings of the Channels tutorial site; the channel layer comes from the environment.

``COMPAT_BACKEND`` names a chanlite layer class (``chanlite.layers.memory.MemoryLayer``,
``chanlite_sqlite.SQLiteLayer``, ``chanlite_redis.RedisLayer``) and ``COMPAT_CONFIG`` its
``CONFIG`` as JSON: exactly what a Channels project writes in ``CHANNEL_LAYERS``.
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "chanlite-compat-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
    "compat_chat",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "compat_site.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
ASGI_APPLICATION = "compat_site.asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": os.environ["COMPAT_BACKEND"],
        "CONFIG": json.loads(os.environ.get("COMPAT_CONFIG", "{}")),
    }
}
