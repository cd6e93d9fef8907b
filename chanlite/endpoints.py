"""Handler wrappers: a WebSocket handler and the layer-event handlers bound to it."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async

from chanlite.eventtypes import check_on_type
from chanlite.websocket import EventHandler

__all__ = ["EventHandler", "WebSocketHandler", "as_async"]

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", bound=Callable[..., Awaitable[None]])


def as_async(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Return *func* if it is a coroutine function, else a wrapper running it on a thread.

    Plain ``def`` handlers may block (ORM queries, file I/O), so they run on asgiref's
    thread pool and never on the event loop.
    """
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
    ):
        return func
    on_thread = sync_to_async(func, thread_sensitive=False)

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        result = await on_thread(*args, **kwargs)
        if inspect.iscoroutine(result):
            # `def h(ws, event): return ws.send_json(...)` made a coroutine nobody would
            # await: the frame would be lost with a RuntimeWarning at best. Say so instead.
            result.close()
            name = getattr(func, "__qualname__", repr(func))
            raise TypeError(
                f"{name} is a plain def and returned a coroutine ({result.__qualname__}), "
                "which would never run: make it an async def and await it, or call it "
                "through chanlite.async_to_sync(...) from the plain def."
            )
        return result

    return run


class WebSocketHandler(Generic[H]):
    """A registered WebSocket handler: call it like the function, add ``on`` handlers.

    ``@app.websocket(path)`` returns one of these, so ``@chat.on("chat.message")`` can bind
    layer events to the same connection handler.
    """

    __name__: str
    __qualname__: str

    def __init__(self, func: H, path: str) -> None:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"WebSocket handler {func.__qualname__} must be an async def: it runs for "
                "the whole life of the connection on the event loop."
            )
        functools.update_wrapper(self, func)
        self.func = func
        self.path = path
        self.events: dict[str, EventHandler] = {}
        #: Authenticates this handler's sockets (``app.websocket(path, auth=...)``), or None.
        self.auth: Callable[[Any], Awaitable[Any]] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[None]:
        return self.func(*args, **kwargs)

    def on(self, event_type: str) -> Callable[[F], F]:
        """Handle layer events of *event_type* for connections of this handler.

        The handler is ``async def f(ws, event)`` or a plain ``def`` (run on a thread).
        Events for one connection are handled one at a time, in arrival order. The type
        is matched exactly (see :meth:`add_event_handler`); stack ``on`` decorators to
        take several types with one function.
        """
        if not isinstance(event_type, str) or not event_type:
            raise TypeError("on() needs the event type as a non-empty string, e.g. 'chat.message'")

        def decorator(func: F) -> F:
            self.add_event_handler(event_type, func)
            return func

        return decorator

    def add_event_handler(self, event_type: str, func: Callable[..., Any]) -> None:
        """Register *func* for layer events of *event_type* (``on`` without decoration).

        The type is matched exactly: ``"chat.message"`` and ``"chat_message"`` are two
        types (Django Channels sends both to a method ``chat_message``); register both
        to take both. ASGI message types (``"websocket.receive"``, ...) are refused with
        a ``ValueError`` saying where chanlite handles them.
        """
        check_on_type(event_type, self.__name__)
        if event_type in self.events:
            raise ValueError(
                f"{self.__qualname__} already handles {event_type!r} events "
                f"(with {getattr(self.events[event_type], '__qualname__', '?')})"
            )
        self.events[event_type] = as_async(func)
