"""The WebSocket close codes chanlite sends, and why it sends each (RFC 6455, 7.4.1).

The server (protocol limits, shutdown) and the app side (handler errors, slow consumers)
both close with these, so a client sees one meaning per code whichever side closed.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Close codes with the situations chanlite uses them for."""

    NORMAL = 1000
    """The handler returned, or closed without a code."""
    GOING_AWAY = 1001
    """The server is shutting down (graceful shutdown)."""
    PROTOCOL_ERROR = 1002
    """The client broke RFC 6455 (bad framing, too many fragments, a control-frame flood)."""
    UNSUPPORTED_DATA = 1003
    """A frame of a kind the handler does not take (binary to ``iter_text``, say)."""
    INVALID_PAYLOAD = 1007
    """A text frame that is not UTF-8, or a frame that is not the JSON the handler reads."""
    POLICY_VIOLATION = 1008
    """The client did something the application refuses (origin, authentication)."""
    MESSAGE_TOO_BIG = 1009
    """A message over the size limit (``--ws-max-size``)."""
    INTERNAL_ERROR = 1011
    """The handler raised, or the channel layer it needed is unavailable."""
    TRY_AGAIN_LATER = 1013
    """The slow-consumer policy: the client did not read what was sent to it."""


#: The close reason that goes with :attr:`CloseCode.TRY_AGAIN_LATER` for a slow consumer.
SLOW_CONSUMER = "slow consumer"

#: The close reason that goes with :attr:`CloseCode.INTERNAL_ERROR` when the channel layer
#: cannot be reached (the outage is logged once by the hub, not per connection).
LAYER_UNAVAILABLE = "channel layer unavailable"
