"""Errors raised by the Redis layer, on top of chanlite's layer errors.

::

    chanlite.layers.LayerError
     +-- RedisUnavailable      (also ConnectionError: Redis could not be reached in time)
"""

from __future__ import annotations

from chanlite.layers.base import LayerError


class RedisUnavailable(LayerError, ConnectionError):
    """Redis could not be reached (refused, timed out, lost, or refused our credentials).

    Raised by ``send``, ``group_send``, ``group_add`` and friends during an outage instead
    of waiting for the server to return; the layer reconnects by itself, so the caller may
    simply retry later.
    """
