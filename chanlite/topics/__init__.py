"""Topics on the Phoenix Channels wire protocol: many topics over one socket, spoken with
the official ``phoenix`` JavaScript client (and the clients that speak the same protocol).

``app.socket(path)`` returns a :class:`TopicSocket`; ``socket.topic(pattern)`` a
:class:`Topic` whose handlers get a :class:`Channel`. The protocol itself, without I/O,
is :mod:`chanlite.topics.protocol`.
"""

from __future__ import annotations

from chanlite.topics.connection import Channel, Connection
from chanlite.topics.endpoint import TopicSocket
from chanlite.topics.protocol import Limits
from chanlite.topics.topic import Refused, Reply, Topic

__all__ = ["Channel", "Connection", "Limits", "Refused", "Reply", "Topic", "TopicSocket"]
