"""The :class:`App`: decorated handlers, routes, a channel layer, and an ASGI 3 entry point."""

from __future__ import annotations

import asyncio
import logging
import traceback
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from chanlite import encoders
from chanlite.asgi_websocket import peer
from chanlite.census import Census
from chanlite.closecodes import CloseCode
from chanlite.encoders import JSONDefault
from chanlite.endpoints import WebSocketHandler, as_async
from chanlite.exceptions import RAISE_EXCEPTIONS, HTTPException, RegistrationClosed
from chanlite.hub import Hub, HubStats, LayerCheckFailed
from chanlite.layers.base import BaseLayer, Event, LayerUnavailable
from chanlite.layers.streams import HistoryPage, HistoryPolicy, StreamPosition
from chanlite.metrics import Metrics
from chanlite.requests import ClientDisconnect, Request
from chanlite.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    plain_messages,
    to_response,
)
from chanlite.routing import (
    BaseRoute,
    HTTPRoute,
    Match,
    Mount,
    PathRoute,
    WebSocketRoute,
    route_path,
    static_routes,
)
from chanlite.subscription import Subscription
from chanlite.sync import SyncSender
from chanlite.topics import Limits, TopicSocket
from chanlite.types import ASGIApp, Receive, Scope, Send
from chanlite.websocket import WebSocket

logger = logging.getLogger("chanlite")

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", bound=Callable[..., Awaitable[None]])
T = TypeVar("T")

LifespanHook = Callable[[], Any]


class App:
    """A chanlite application: an ASGI 3 app built from decorated handlers.

    >>> app = App(layer="memory://")
    >>> @app.http("/health")
    ... async def health(request):
    ...     return {"ok": True}

    *layer* is a layer URL (``memory://``, ``sqlite:///chat.db``, ``redis://...``) or a
    layer object; *fallback* is an ASGI app for everything no route matches (e.g. Django's
    ``get_asgi_application()``); *debug* shows tracebacks in 500 responses;
    *max_pending_events* bounds the layer events waiting for one connection's ``on``
    handlers (default: the layer's capacity for its channel) before its client is closed
    as a slow consumer (1013); *json_default* encodes what JSON cannot hold in returned
    dicts/lists and ``ws.send_json`` (default :func:`chanlite.encoders.json_default`:
    datetime, UUID, Decimal, dataclasses, enums); *json_errors* answers every
    :class:`HTTPException` as ``{"detail": ...}`` JSON (by default only requests that
    accept or send JSON get it); *metrics* is a path (e.g. ``"/metrics"``) at which to
    answer Prometheus scrapes (off by default; needs ``chanlite[metrics]``).
    """

    def __init__(
        self,
        layer: str | BaseLayer | None = "memory://",
        *,
        fallback: ASGIApp | None = None,
        debug: bool = False,
        max_pending_events: int | None = None,
        json_default: JSONDefault | None = None,
        json_errors: bool = False,
        metrics: str | None = None,
    ) -> None:
        self.routes: list[BaseRoute] = []
        self.fallback = fallback
        self.debug = debug
        self.json_default: JSONDefault = json_default or encoders.json_default
        self.json_errors = json_errors
        #: This process's link to the layer: the layer, its reader, channels, tasks, stats.
        self.hub = Hub(layer, max_pending_events=max_pending_events)
        #: This process's numbers, published into the layer on a heartbeat under a server
        #: (``chanlite inspect``), and read by ``/metrics``.
        self.census = Census(self.hub)
        self._metrics: Metrics | None = None
        if metrics is not None:
            self.enable_metrics(metrics)
        self._startup: list[Callable[[], Awaitable[Any]]] = []
        self._shutdown: list[Callable[[], Awaitable[Any]]] = []
        self._middleware: list[tuple[Callable[..., ASGIApp], dict[str, Any]]] = []
        self._stack: ASGIApp | None = None
        self._static: dict[tuple[str, str], HTTPRoute | WebSocketRoute] = {}
        self._tasks_at_startup: set[asyncio.Task[Any]] | None = None
        self._json_routes: set[BaseRoute] = set()
        self._authenticate: Callable[[WebSocket], Awaitable[Any]] | None = None

    # -- the layer (held by the hub) ------------------------------------------------------

    @property
    def layer(self) -> BaseLayer:
        """The channel layer, built from its URL on first use."""
        return self.hub.layer

    @property
    def layer_url(self) -> str | None:
        """The layer URL, or None when the layer was given as an object (or disabled)."""
        return self.hub.layer_url

    def configure_layer(self, layer: str | BaseLayer) -> None:
        """Replace the layer (e.g. ``chanlite run --layer``) before the app starts serving."""
        self._check_open("configure the layer")
        self.hub.configure_layer(layer)

    @property
    def stats(self) -> HubStats:
        """Counters of what the hub delivered, could not deliver or closed as slow."""
        return self.hub.stats

    @property
    def dispatcher(self) -> Hub:
        """Deprecated: the hub (``app.hub``) does what the dispatcher did."""
        warnings.warn("App.dispatcher is deprecated; use App.hub", DeprecationWarning, stacklevel=2)
        return self.hub

    # -- registration -----------------------------------------------------------------------

    def _check_open(self, action: str) -> None:
        if self._stack is not None:
            raise RegistrationClosed(
                f"Cannot {action} after the app has started serving; register routes, "
                "handlers and middleware at import time, before the first request."
            )

    def add_route(self, route: BaseRoute) -> None:
        """Append a route object (routes are tried in the order they were added)."""
        self._check_open("add a route")
        self.routes.append(route)

    def add_http_route(
        self,
        path: str,
        endpoint: Callable[..., Any],
        methods: Sequence[str] | None = None,
        name: str | None = None,
        *,
        json: bool = False,
    ) -> None:
        """Serve *path* with *endpoint* ``(request, **path_params)``; plain defs run on a thread.

        ``json=True`` marks a JSON route: its :class:`HTTPException` answers are
        ``{"detail": ...}`` JSON whatever the client accepts.
        """
        name = name or str(getattr(endpoint, "__name__", type(endpoint).__name__))
        route = HTTPRoute(path, as_async(endpoint), methods=methods, name=name)
        self.add_route(route)
        if json:
            self._json_routes.add(route)

    def http(
        self,
        path: str,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        *,
        json: bool = False,
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`add_http_route`; returns the function unchanged."""

        def decorator(func: F) -> F:
            self.add_http_route(path, func, methods=methods, name=name, json=json)
            return func

        return decorator

    def add_websocket_route(
        self, path: str, handler: H, *, auth: Callable[..., Any] | None = None
    ) -> WebSocketHandler[H]:
        """Serve WebSockets on *path* with *handler* ``(ws, **path_params)``, one per socket.

        *auth* authenticates this route's sockets (instead of :meth:`authenticate`'s hook).
        """
        endpoint = (
            handler if isinstance(handler, WebSocketHandler) else WebSocketHandler(handler, path)
        )
        if auth is not None:
            endpoint.auth = as_async(auth)
        self.add_route(WebSocketRoute(path, endpoint, name=endpoint.__name__))
        return endpoint

    def websocket(
        self, path: str, *, auth: Callable[..., Any] | None = None
    ) -> Callable[[H], WebSocketHandler[H]]:
        """Decorator form of :meth:`add_websocket_route`; the result has ``.on(type)``."""

        def decorator(func: H) -> WebSocketHandler[H]:
            return self.add_websocket_route(path, func, auth=auth)

        return decorator

    def authenticate(self, func: F) -> F:
        """Authenticate every WebSocket before its handler runs (a route's ``auth=`` wins).

        ``func(ws)`` (async or plain) reads what the client sent - ``ws.query_params``,
        ``ws.cookies``, ``ws.headers`` - and returns the user, which becomes ``ws.user``
        (``scope["user"]``), or None to refuse: the handshake is then answered 403 before
        any accept, the handler never runs, and one INFO line says so. An exception in
        *func* refuses too, logged with its traceback::

            @app.authenticate
            async def user_from_token(ws):
                return await users.by_token(ws.query_params.get("token"))
        """
        self._check_open("add an authentication hook")
        self._authenticate = as_async(func)
        return func

    def socket(
        self,
        path: str,
        *,
        connect: Callable[..., Any] | None = None,
        limits: Limits | None = None,
        longpoll: bool = True,
    ) -> TopicSocket:
        """Serve the Phoenix Channels protocol on *path* (``/websocket``, ``/longpoll``).

        ``room = socket.topic("room:{name}")`` then declares topics and their handlers;
        *connect* ``(connection, params)`` returns True to accept a client.
        """
        self._check_open("add a socket")
        endpoint = TopicSocket(path, self.hub, connect=connect, limits=limits, longpoll=longpoll)
        for route in endpoint.routes():
            self.add_route(route)
        return endpoint

    def mount(self, prefix: str, app: ASGIApp, name: str | None = None) -> None:
        """Hand every HTTP and WebSocket request under *prefix* to another ASGI *app*."""
        self.add_route(Mount(prefix, app, name=name))

    def static(self, prefix: str, directory: str, *, html: bool = False) -> None:
        """Serve the files under *directory* at *prefix* (no path traversal)."""
        from chanlite.staticfiles import StaticFiles

        self.mount(prefix, StaticFiles(directory=directory, html=html), name="static")

    def enable_metrics(self, path: str = "/metrics") -> None:
        """Answer Prometheus scrapes at *path* (``GET``; the text format). Correct under
        ``chanlite run --workers N``: see :mod:`chanlite.metrics`. Raises ImportError
        naming the package when prometheus-client is not installed."""
        if self._metrics is not None and self._metrics.path == path:
            return
        self._metrics = Metrics(self.census, path)

    @property
    def metrics_path(self) -> str | None:
        """Where Prometheus scrapes are answered, or None (off)."""
        return self._metrics.path if self._metrics is not None else None

    def add_middleware(self, middleware: Callable[..., ASGIApp], **options: Any) -> None:
        """Wrap the app in ASGI *middleware* ``middleware(app, **options)``.

        The last one added is the outermost.
        """
        self._check_open("add middleware")
        self._middleware.append((middleware, options))

    def on_startup(self, func: F) -> F:
        """Run *func* (async or plain) when the server starts (ASGI lifespan)."""
        self._check_open("add a startup hook")
        self._startup.append(as_async(func))
        return func

    def on_shutdown(self, func: F) -> F:
        """Run *func* (async or plain) when the server stops (ASGI lifespan)."""
        self._check_open("add a shutdown hook")
        self._shutdown.append(as_async(func))
        return func

    def url_path_for(self, route_name: str, /, **params: Any) -> str:
        """The path of the route called *route_name*, with *params* filled in."""
        for route in self.routes:
            if isinstance(route, PathRoute) and route.name == route_name:
                return route.url_path(**params)
        raise KeyError(f"No route named {route_name!r}")

    # -- talking to connections ---------------------------------------------------------

    async def send(self, channel: str, event: Event) -> None:
        """Send *event* to one connection's ``on`` handler, in any process on the layer."""
        await self.hub.send(channel, event)

    async def group_send(self, group: str, event: Event) -> None:
        """Send *event* to the ``on`` handlers of every member of *group*."""
        await self.hub.group_send(group, event)

    async def broadcast(
        self,
        group: str,
        *,
        text: str | None = None,
        bytes: bytes | None = None,
        json: Any = None,
        exclude: str | None = None,
    ) -> None:
        """Write one frame to every member socket of *group*, with no handler per member.

        The frame is encoded once per process and the same bytes go to every member;
        *exclude* names one channel (``ws.channel_name``) that does not get it.
        """
        await self.hub.broadcast(group, text=text, bytes=bytes, json=json, exclude=exclude)

    # -- history and presence -------------------------------------------------------------

    def history(self, pattern: str, size: int = 100, ttl: float | None = None) -> None:
        """Keep the last *size* messages (none older than *ttl* seconds) of every group
        whose name matches the glob *pattern*, e.g. ``app.history("room.*", size=50)``.

        Each message sent to such a group -- ``group_send``, ``broadcast``, the blocking
        senders of ``app.sync`` -- gets the next offset of the group and the group's
        epoch (``"offset"``, ``"epoch"``, ``"group"`` keys in the event); a connection
        can join from a position (:meth:`WebSocket.join`) and miss nothing. The first
        matching pattern applies. Declare before serving; raises
        :class:`~chanlite.layers.NotSupported` on a layer that keeps no history and
        :class:`~chanlite.layers.LayerConfigError` for a pattern that can never match a
        group name or a bad size/ttl.
        """
        self._check_open("declare history")
        self.hub.keep_history(pattern, HistoryPolicy(size, ttl))

    async def history_since(
        self, group: str, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The messages of history group *group*: all retained (the newest *limit*), or
        exactly those after *since* (raises :class:`~chanlite.layers.HistoryGap` when
        that cannot be served exactly). Events carry ``offset``/``epoch``/``group``."""
        return await self.hub.history(group, since, limit)

    async def stream_position(self, group: str) -> StreamPosition:
        """The position (last offset, epoch) of history group *group*."""
        return await self.hub.stream_position(group)

    async def presence(self, group: str) -> dict[str, list[dict[str, Any]]]:
        """Who is in *group*, across processes: key -> metas (each with ``"ref"``)."""
        return await self.hub.presence(group)

    def subscribe(self, *groups: str, max_pending: int = 1000) -> Subscription:
        """Receive the layer events of *groups* outside a WebSocket (e.g. to feed SSE).

        ``async with app.subscribe("ticks") as events: async for event in events: ...``

        At most *max_pending* events wait for the reader. A reader that falls that far
        behind and takes nothing for a second gets the slow-consumer policy: the
        subscription ends, the iterator raises :class:`~chanlite.exceptions.SlowConsumer`,
        and the loss is counted (``stats.slow_consumers``, ``stats.events_undeliverable``)
        and logged once. Nothing is dropped silently.
        """
        return Subscription(self.hub, groups, max_pending=max_pending)

    @property
    def sync(self) -> SyncSender:
        """Blocking senders for code with no event loop: ``app.sync.group_send(...)``."""
        return SyncSender(self.hub)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run *coro* as a background task the app keeps a reference to and logs on failure."""
        return self.hub.spawn(coro)

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = self._stack
        if stack is None:
            stack = self._stack = self._build_stack()
        await stack(scope, receive, send)

    def _build_stack(self) -> ASGIApp:
        self._static = static_routes(self.routes)
        app: ASGIApp = self._route
        for middleware, options in self._middleware:
            app = middleware(app, **options)
        return app

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            raise ValueError(f"chanlite cannot serve ASGI scope type {kind!r}")
        metrics = self._metrics
        if metrics is not None and kind == "http" and scope["path"] == metrics.path:
            await metrics(scope, receive, send)
            return
        # Most requests are for a path without parameters: one dictionary lookup.
        hit = self._static.get((kind, route_path(scope)))
        if hit is not None:
            if isinstance(hit, WebSocketRoute):
                scope["path_params"] = dict(scope.get("path_params", ()))
                scope["route"] = hit
                # The connection runs its handler and cleans up after it (inlined here:
                # the handshake path is measured, one coroutine less).
                scope["app"] = self
                ws = WebSocket(scope, receive, send, hub=self.hub, handler=hit.endpoint)
                auth = getattr(hit.endpoint, "auth", None) or self._authenticate
                if auth is not None and not await _authenticated(ws, auth):
                    return
                await ws.run_handler(**scope["path_params"])
                return
            if scope["method"] in hit.methods:  # else the walk below answers 405
                scope["path_params"] = dict(scope.get("path_params", ()))
                scope["route"] = hit
                await self._serve_http(hit, scope, receive, send)
                return
        partial: dict[str, Any] | None = None
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                if isinstance(route, Mount):
                    await route.app(scope, receive, send)
                elif kind == "http":
                    await self._serve_http(route, scope, receive, send)
                else:
                    await self._serve_websocket(route, scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = child
        if kind == "http" and partial is None:
            # /items/ where /items exists (or the other way round): redirect, as
            # Starlette and Django (APPEND_SLASH) do, rather than 404.
            location = self._slash_redirect(scope)
            if location is not None:
                await RedirectResponse(location, 307)(scope, receive, send)
                return
        if self.fallback is not None:
            await self.fallback(scope, receive, send)
        elif kind == "websocket":
            await self._reject_websocket(receive, send)
        elif partial is not None:
            allow = ", ".join(sorted(partial["route"].methods))
            await PlainTextResponse("Method Not Allowed", 405, headers={"Allow": allow})(
                scope, receive, send
            )
        else:
            await PlainTextResponse("Not Found", 404)(scope, receive, send)

    def _slash_redirect(self, scope: Scope) -> str | None:
        """The same path with its trailing slash added or removed, when that path has a
        route (not a mount: a mount takes both); with the query string kept."""
        path: str = scope["path"]
        if path == "/" or (scope.get("root_path") and route_path(scope) == "/"):
            return None
        other = path[:-1] if path.endswith("/") else path + "/"
        probe = {**scope, "path": other}
        for route in self.routes:
            if isinstance(route, Mount):
                continue
            if route.matches(probe)[0] is not Match.NONE:
                query: bytes = scope.get("query_string", b"")
                return other + ("?" + query.decode("latin-1") if query else "")
        return None

    async def _serve_http(self, route: Any, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response: Response
        messages = None
        failure: Exception | None = None
        try:
            result = await route.endpoint(request, **scope["path_params"])
            messages = plain_messages(result, scope["method"], self.json_default)
            if messages is None:
                response = to_response(result, self.json_default)
        except ClientDisconnect:
            logger.debug("Client left during %s %s", scope["method"], scope["path"])
            await request.close()
            return
        except HTTPException as exc:
            if self.json_errors or route in self._json_routes or _wants_json(scope):
                response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
            else:
                response = PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)
        except LayerUnavailable as exc:
            self.hub.layer_failed(exc)  # logged once per outage, not once per request
            response = PlainTextResponse("Service Unavailable: channel layer unavailable", 503)
        except Exception as exc:
            if RAISE_EXCEPTIONS in scope.get("extensions", ()):
                failure = exc  # a test client asked to see it, after the 500
            else:
                logger.exception("Exception in HTTP handler %s for %s", route.name, scope["path"])
            body = "Internal Server Error"
            if self.debug:
                body = "".join(traceback.format_exception(exc))
            response = PlainTextResponse(body, 500)
        try:
            if messages is not None:  # a str, dict or list return: no Response object
                await send(messages[0])
                await send(messages[1])
            else:
                await response(scope, receive, send)
        finally:
            if request.has_form:
                await request.close()  # release spooled upload files now, not at GC
        if failure is not None:
            raise failure

    async def _serve_websocket(
        self, route: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        scope["app"] = self
        ws = WebSocket(scope, receive, send, hub=self.hub, handler=route.endpoint)
        auth = getattr(route.endpoint, "auth", None) or self._authenticate
        if auth is not None and not await _authenticated(ws, auth):
            return
        await ws.run_handler(**scope["path_params"])

    @staticmethod
    async def _reject_websocket(receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1000, "reason": ""})

    async def handle_event(self, ws: WebSocket, handler: Any, event: Event) -> None:
        """Deprecated: a connection runs its own ``on`` handlers (``ws.handle_event``)."""
        warnings.warn(
            "App.handle_event is deprecated; use WebSocket.handle_event",
            DeprecationWarning,
            stacklevel=2,
        )
        await ws.handle_event(event)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # chanlite's server offers its counters (and --metrics-path) in the scope.
        offered = (scope.get("extensions") or {}).get("chanlite.counters") or {}
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # What ran before the app started is not the app's (see _warn_stray_tasks).
                self._tasks_at_startup = asyncio.all_tasks()
                try:
                    await self.hub.check()
                except LayerCheckFailed as exc:
                    # One line names the URL, the cause and the fix; the traceback is for
                    # --log-level debug.
                    logger.debug("Channel layer check failed", exc_info=exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                try:
                    for hook in self._startup:
                        await hook()
                except Exception as exc:
                    logger.exception("Application startup failed")
                    await send({"type": "lifespan.startup.failed", "message": _describe(exc)})
                    return
                try:
                    self._start_reporting(offered)
                except ImportError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.aclose()
                except Exception as exc:
                    logger.exception("Application shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": _describe(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _warn_stray_tasks(self) -> None:
        """Say so when tasks started by the app's own modules without :meth:`spawn` are
        still running at shutdown: nothing cancels or awaits them, and their failures
        surface only when they are garbage-collected, if ever."""
        modules = set()
        for func in [
            *self._startup,
            *self._shutdown,
            *(getattr(r, "endpoint", None) for r in self.routes),
        ]:
            func = getattr(func, "func", func)  # a WebSocketHandler wraps the function
            module = getattr(func, "__module__", None)
            if isinstance(module, str) and not module.startswith("chanlite."):
                modules.add(module)
        before, self._tasks_at_startup = self._tasks_at_startup, None
        if not modules or before is None:
            return
        spawned = self.hub.tasks
        stray = []
        for task in asyncio.all_tasks():
            if task.done() or task in spawned or task in before:
                continue
            frame = getattr(task.get_coro(), "cr_frame", None)
            if frame is not None and frame.f_globals.get("__name__") in modules:
                stray.append(getattr(task.get_coro(), "__qualname__", repr(task)) + "()")
        if stray:
            logger.warning(
                "Background task%s %s still running at shutdown %s started without "
                "app.spawn(): nothing cancels or awaits %s, and a failure in %s is lost. "
                "Start background work with app.spawn(coro): the app keeps it, logs its "
                "failure and cancels it at shutdown.",
                "" if len(stray) == 1 else "s",
                ", ".join(sorted(stray)),
                "was" if len(stray) == 1 else "were",
                "it" if len(stray) == 1 else "them",
                "it" if len(stray) == 1 else "them",
            )

    def _start_reporting(self, offered: dict[str, Any]) -> None:
        # Under chanlite's server only: a test client or another server gets no heartbeat.
        path = offered.get("metrics_path")
        if path:
            self.enable_metrics(path)
        server = offered.get("server")
        if server is None:
            return
        if self.hub.has_layer:
            self.census.start(server)
        else:
            self.census.server = server
        if self._metrics is not None:
            self._metrics.start(self.hub.spawn)

    async def aclose(self) -> None:
        """Run shutdown hooks, stop the hub's reader and background tasks, close the layer."""
        errors: list[BaseException] = []
        for hook in self._shutdown:
            try:
                await hook()
            except Exception as exc:
                errors.append(exc)
        self._warn_stray_tasks()
        await self.census.stop()
        if self._metrics is not None:
            await self._metrics.stop()
        await self.hub.aclose()
        if errors:
            raise errors[0]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _wants_json(scope: Scope) -> bool:
    """A JSON client: it accepts JSON (and not HTML), or it sent a JSON body."""
    for name, value in scope["headers"]:
        if name == b"accept":
            accept = value.lower()
            if b"json" in accept and b"text/html" not in accept:
                return True
        elif name == b"content-type" and b"json" in value.lower().split(b";")[0]:
            return True
    return False


async def _authenticated(ws: WebSocket, auth: Callable[[WebSocket], Awaitable[Any]]) -> bool:
    """Run *auth*; set ``scope["user"]`` and return True, or refuse the handshake (403)."""
    try:
        user = await auth(ws)
    except Exception:
        logger.exception("WebSocket authentication failed for %s", ws.scope.get("path"))
        user = None
    else:
        if user is None:
            logger.info(
                "WebSocket %s from %s refused: not authenticated",
                ws.scope.get("path"),
                peer(ws.scope),
            )
    if user is None:
        await ws.close(CloseCode.POLICY_VIOLATION)  # before accept: a 403 handshake answer
        return False
    ws.scope["user"] = user
    return True
