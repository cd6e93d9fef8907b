"""How an event's ``type`` finds its ``on`` handler, and what to say when it does not.

chanlite matches a layer event's ``type`` to ``@handler.on(type)`` exactly. Django
Channels does not: it calls the consumer method named by the type with every ``.``
turned into ``_``, so ``"chat.message"`` and ``"chat_message"`` both reach
``chat_message()``. Code written for Channels (or a Channels consumer sharing the layer)
therefore sends events a chanlite handler may not take; the hints here make that drop
explain itself instead of looking like a typo. Pure functions, no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

__all__ = ["channels_method_name", "check_on_type", "unhandled_hint"]

# The ASGI messages Channels hands to consumer methods (websocket_receive(), ...). In
# chanlite they are not layer events: the handler reads frames and sees the end itself.
_ASGI_TYPES = frozenset(
    {
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
        "http.request",
        "http.disconnect",
    }
)


def channels_method_name(event_type: str) -> str:
    """The consumer method Django Channels would call for *event_type*
    (``"chat.message"`` -> ``"chat_message"``)."""
    return event_type.replace(".", "_")


def check_on_type(event_type: str, handler_name: str) -> None:
    """Refuse ``on(...)`` for an ASGI message type, which would never run in chanlite:
    ``check_on_type("websocket.receive", "chat")`` raises ``ValueError`` saying where
    client frames are read instead (``websocket_receive`` too, Channels' method name)."""
    asgi = {channels_method_name(name): name for name in _ASGI_TYPES}
    name = asgi.get(event_type, event_type)
    if name not in _ASGI_TYPES:
        return
    if name.startswith("http."):
        advice = (
            "an HTTP request is answered by an @app.http(path) handler, which gets the "
            "request (await request.body()) and returns the response"
        )
    elif name == "websocket.connect":
        advice = (
            "the handler itself runs when a client connects: accept (await ws.accept()) "
            "or refuse (await ws.close()) there"
        )
    else:
        advice = (
            "client frames are not layer events. Read them in the handler "
            "(async for data in ws.iter_json(): ...) and put what Channels' disconnect() "
            "did after that loop; groups joined with ws.join() are left on their own"
        )
    raise ValueError(
        f"{handler_name}.on({event_type!r}) would never run: in Django Channels this is "
        f"the consumer method {channels_method_name(name)}() for the ASGI message "
        f"{name!r}, but in chanlite {advice}."
    )


def unhandled_hint(kind: object, types: Collection[str], handler_name: str) -> str:
    """What to add to "No on(kind) handler; event dropped": the likely fix.

    When a handled type differs from *kind* only in Channels' ``.``/``_`` spelling, the
    hint explains Channels' naming rule and both fixes; otherwise it suggests a close
    type, and lists the handled ones.
    """
    if not types:
        return f" {handler_name} handles no event types (add one with @{handler_name}.on(type))."
    handled = sorted(types)
    listing = f" It handles: {', '.join(handled)}."
    if not isinstance(kind, str):
        return listing
    method = channels_method_name(kind)
    twins = [t for t in handled if channels_method_name(t) == method]
    if twins:
        twin = twins[0]
        return (
            f" It handles {twin!r}, which Django Channels treats as the same type: a Channels "
            f"consumer's method {method}() gets both {kind!r} and {twin!r}, while chanlite "
            f"matches the type exactly. Send {twin!r}, or also register "
            f"@{handler_name}.on({kind!r}) (on() decorators stack on one function).{listing}"
        )
    close = difflib.get_close_matches(kind, handled, n=1)
    guess = f" Did you mean {close[0]!r}?" if close else ""
    return f"{guess}{listing}"
