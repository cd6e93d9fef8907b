"""Exceptions raised to application code.

::

    ChanliteError
     +-- HTTPException          (an HTTP error response: status code + detail)
     +-- WebSocketDisconnect    (the client went away; .code, .reason)
     +-- WebSocketStateError    (also RuntimeError: an API call in the wrong state)
     +-- RegistrationClosed     (also RuntimeError: a route added after serving began)
     +-- ClientDisconnected     (also OSError: ``send`` after the client went away)
     +-- SlowConsumer           (a subscription ended: its reader fell too far behind)
"""

from __future__ import annotations

from http import HTTPStatus


class ChanliteError(Exception):
    """Base class of chanlite's own exceptions."""


class HTTPException(ChanliteError):
    """Raise in an HTTP handler to answer with *status_code* and a short *detail*."""

    def __init__(
        self,
        status_code: int,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if detail is None:
            try:
                detail = HTTPStatus(status_code).phrase
            except ValueError:
                detail = "Error"
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"


class WebSocketDisconnect(ChanliteError):
    """The WebSocket is closed: raised by ``receive_*`` once the peer has gone."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


class WebSocketStateError(ChanliteError, RuntimeError):
    """A WebSocket method was called in a state that does not allow it; says what to do."""


class RegistrationClosed(ChanliteError, RuntimeError):
    """A route, handler or middleware was added after the app started serving."""


class ClientDisconnected(ChanliteError, OSError):
    """``send`` was called on a connection the client has closed (ASGI spec 2.4 asks for
    an ``OSError``). Raised by the built-in server and by the TestClient alike; an app
    that ends with it is taken to have finished normally."""


class SlowConsumer(ChanliteError):
    """A subscription (``app.subscribe``) was ended by the slow-consumer policy: its
    reader fell more than ``max_pending`` events behind and did not catch up. Raised by
    the iterator and by ``receive``; ``dropped`` is how many events it did not get."""

    def __init__(self, channel_name: str, dropped: int) -> None:
        super().__init__(channel_name, dropped)
        self.channel_name = channel_name
        self.dropped = dropped

    def __str__(self) -> str:
        return (
            f"Subscription {self.channel_name} ended as a slow consumer: "
            f"{self.dropped} events were not delivered to it"
        )


#: The ASGI scope extension a test client sets to have a chanlite App re-raise a handler's
#: exception once it has answered 500 (HTTP) or closed 1011 (WebSocket). Servers do not
#: set it: there the App logs the exception and the connection goes on.
RAISE_EXCEPTIONS = "chanlite.raise_exceptions"
