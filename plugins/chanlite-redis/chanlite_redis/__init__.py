"""chanlite-redis: chanlite's channel layer on Redis, for sites that outgrow one machine.

``--layer redis://[:password@]host:6379/0`` (or ``rediss://`` for TLS) selects it through
the ``chanlite.layers`` entry points; Django Channels users name
``chanlite_redis.RedisLayer`` as their ``CHANNEL_LAYERS`` backend.
"""

from __future__ import annotations

from chanlite_redis.__about__ import __version__
from chanlite_redis.errors import RedisAuthError, RedisUnavailable
from chanlite_redis.layer import RedisLayer

__all__ = ["RedisAuthError", "RedisLayer", "RedisUnavailable", "__version__"]
