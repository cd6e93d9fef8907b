"""What one server process counts: connections, handshakes, messages, bytes, drops.

Plain ints on one object with ``__slots__``, incremented where the event happens (no locks:
one event loop owns them). The server knows nothing of who reads them; it offers the object
to the application in the lifespan scope::

    scope["extensions"]["chanlite.counters"] == {"server": <ServerCounters>}

and an application that wants them (chanlite's metrics and ``chanlite inspect``) calls
:meth:`ServerCounters.snapshot` when it reports, so the server never imports the app side
and the hot paths cost one integer add each.
"""

from __future__ import annotations

#: The lifespan-scope extension that carries the counters.
EXTENSION = "chanlite.counters"

#: Why a WebSocket handshake was refused (the keys of :attr:`ServerCounters.ws_refused`).
REFUSED_REASONS = ("app", "denial", "error", "over_limit", "timeout")


class ServerCounters:
    """Counters of one server process; read them through :meth:`snapshot`."""

    __slots__ = (
        "http_open",
        "http_requests",
        "slow_consumer_bytes",
        "slow_consumers",
        "ws_accepted",
        "ws_bytes_in",
        "ws_bytes_out",
        "ws_messages_in",
        "ws_messages_out",
        "ws_open",
        "ws_refused",
    )

    def __init__(self) -> None:
        self.http_open = 0
        """HTTP connections open now (keep-alive ones included; upgraded ones move to ws)."""
        self.http_requests = 0
        """HTTP requests handed to the app."""
        self.ws_open = 0
        """WebSocket connections open now (from the upgrade request to the lost transport)."""
        self.ws_accepted = 0
        """WebSocket handshakes the app accepted."""
        self.ws_refused: dict[str, int] = dict.fromkeys(REFUSED_REASONS, 0)
        """WebSocket handshakes refused, by reason: the app closed before accepting (403),
        answered with its own response (denial), raised (500), the server was over
        ``limit_concurrency`` (503), or the handshake timed out."""
        self.ws_messages_in = 0
        """WebSocket messages received from clients."""
        self.ws_bytes_in = 0
        """Bytes read from WebSocket clients (frames, on the wire)."""
        self.ws_messages_out = 0
        """WebSocket messages written to clients; not the frames queued through
        ``send_frame`` (the broadcast path, per member): their caller counts those."""
        self.ws_bytes_out = 0
        """Payload bytes of those messages."""
        self.slow_consumers = 0
        """WebSockets closed with 1013 because their client did not read what was written."""
        self.slow_consumer_bytes = 0
        """Bytes that were waiting for those clients when they were closed."""

    def snapshot(self) -> dict[str, int]:
        """Every counter as a flat ``name -> value`` dict (refusals as ``ws_refused_<why>``)."""
        values = {name: getattr(self, name) for name in self.__slots__ if name != "ws_refused"}
        for why, count in self.ws_refused.items():
            values[f"ws_refused_{why}"] = count
        return values
