# mypy: disable-error-code="import-untyped"
"""The ASGI entry for a Django project: chanlite's routes, then Django for the rest.

``asgi.py``::

    import os
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from chanlite.contrib.django import get_asgi_application
    application = get_asgi_application()

The result is the chanlite App named by ``CHANLITE["APP"]``, set up to serve the site:
its layer is ``CHANLITE["LAYER"]``; Django's ASGI handler (or the App's own ``fallback``,
either with static files in DEBUG) takes every request no chanlite route matches; and a
middleware checks WebSocket origins and fills ``ws.session`` / ``ws.user`` for
chanlite's own routes.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from chanlite.contrib.django import conf, csrf
from chanlite.contrib.django.auth import COOKIES_KEY, populate_scope
from chanlite.contrib.django.origin import header, origin_allowed
from chanlite.routing import BaseRoute, Match
from chanlite.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from chanlite.app import App

logger = logging.getLogger("chanlite.contrib.django")

_lock = threading.Lock()
_current: App | None = None


def current_app() -> App | None:
    """The App :func:`get_asgi_application` set up in this process, if any."""
    return _current


async def reject_handshake(receive: Receive, send: Send, scope: Scope, body: str) -> None:
    """Refuse a WebSocket handshake with HTTP 403 and a short *body*."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body.encode()})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": ""})


class DjangoFallback:
    """Django's ASGI handler for HTTP; WebSockets no chanlite route took get a 403."""

    def __init__(self, django_app: ASGIApp) -> None:
        self.django_app = django_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await reject_handshake(receive, send, scope, "No WebSocket route here.\n")
            return
        await self.django_app(scope, receive, send)


class DjangoMiddleware:
    """Origin check for every handshake; ``session`` and ``user`` for chanlite's routes;
    Django's CSRF check for unsafe requests to chanlite's HTTP routes (see ``csrf``).

    Requests that fall through to Django skip all three: Django's own middleware does
    them.
    """

    def __init__(self, app: ASGIApp, *, chanlite_app: App) -> None:
        self.app = app
        self.chanlite_app = chanlite_app

    def _route(self, scope: Scope) -> BaseRoute | None:
        for route in self.chanlite_app.routes:
            if route.matches(scope)[0] is Match.FULL:
                return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        route = self._route(scope) if kind in ("http", "websocket") else None
        if route is None:
            await self.app(scope, receive, send)
            return
        if kind == "websocket" and not origin_allowed(scope):
            logger.warning(
                "WebSocket handshake to %s refused: origin %r is not allowed "
                "(ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS, CHANLITE['ALLOWED_ORIGINS'])",
                scope.get("path"),
                header(scope, b"origin"),
            )
            await reject_handshake(receive, send, scope, "Origin not allowed.\n")
            return
        scope = dict(scope)
        await populate_scope(scope)
        if kind == "websocket":
            send = _cookie_sender(scope, send)
        else:
            # The handler (for @csrf_exempt), or the mounted app for a Mount.
            endpoint = getattr(route, "endpoint", getattr(route, "app", None))
            if csrf.needs_check(scope, endpoint):
                checked = await csrf.protect(scope, receive, send, endpoint)
                if checked is None:
                    return
                receive = checked
        await self.app(scope, receive, send)


def _cookie_sender(scope: Scope, send: Send) -> Send:
    # login() before accept queues Set-Cookie headers; they ride on the 101 response.
    async def send_with_cookies(message: Message) -> None:
        if message["type"] == "websocket.accept":
            cookies = scope.pop(COOKIES_KEY, None)
            if cookies:
                message = dict(message)
                extra = [(b"set-cookie", cookie) for cookie in cookies]
                message["headers"] = [*(message.get("headers") or []), *extra]
        await send(message)

    return send_with_cookies


def load_app() -> App:
    """Import the App named by ``CHANLITE["APP"]`` (a one-line error if unset or wrong)."""
    from django.core.exceptions import ImproperlyConfigured

    from chanlite.app import App
    from chanlite.importer import ImportFromStringError, import_from_string

    target = conf.get().app
    if not target:
        raise ImproperlyConfigured(
            "settings.CHANLITE['APP'] is not set: name your chanlite App, "
            "e.g. CHANLITE = {'APP': 'mysite.realtime:app'}"
        )
    try:
        app = import_from_string(target)
    except ImportFromStringError as exc:
        raise ImproperlyConfigured(f"settings.CHANLITE['APP']: {exc}") from None
    if not isinstance(app, App):
        raise ImproperlyConfigured(
            f"settings.CHANLITE['APP'] = {target!r} is a {type(app).__name__}, not a chanlite App"
        )
    return app


def django_handler() -> ASGIApp:
    """Django's ASGI handler, wrapped to serve static files in DEBUG like runserver."""
    from django.core.handlers.asgi import ASGIHandler

    return with_static_files(ASGIHandler())


def with_static_files(app: ASGIApp) -> ASGIApp:
    """*app*, wrapped to serve static files first in DEBUG (as runserver does) when
    ``CHANLITE["STATIC_FILES"]`` is on and ``django.contrib.staticfiles`` is installed.

    Everything that is not a static file request (WebSockets included) goes to *app*.
    """
    from django.apps import apps
    from django.conf import settings

    if (
        settings.DEBUG
        and conf.get().static_files
        and apps.is_installed("django.contrib.staticfiles")
    ):
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        return ASGIStaticFilesHandler(app)  # type: ignore[no-any-return]
    return app


def get_asgi_application() -> App:
    """Set Django up and return the project's chanlite App, ready to serve the whole site.

    Calling it again returns the same App without wrapping it twice.
    """
    global _current
    import django

    django.setup(set_prefix=False)
    app = load_app()
    with _lock:
        if _current is app:
            return app
        app.configure_layer(conf.get().layer)
        if app.fallback is None:
            app.fallback = DjangoFallback(django_handler())
        else:
            # The project's own fallback (e.g. its Channels router, while it moves to
            # chanlite) gets static files in DEBUG too, as Django's handler does.
            app.fallback = with_static_files(app.fallback)
        app.add_middleware(DjangoMiddleware, chanlite_app=app)
        _current = app
    return app


def __getattr__(name: str) -> Any:
    # `chanlite run chanlite.contrib.django.asgi:application` (with DJANGO_SETTINGS_MODULE
    # set) serves a project with no asgi.py of its own.
    if name == "application":
        return get_asgi_application()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
