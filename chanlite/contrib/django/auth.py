# mypy: disable-error-code="import-untyped"
"""``ws.session`` and ``ws.user`` from Django's session cookie, and ``login``/``logout``.

The session is read through ``SESSION_ENGINE`` and the user through
``django.contrib.auth.get_user`` (so every auth backend works), both on threads of the ORM
bridge, so a handshake never blocks the event loop on the database. A cookie that is
missing, malformed or stale gives an empty session and an ``AnonymousUser``, never an
exception.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from chanlite.contrib.django.db import auth_executor, run_in, run_sync
from chanlite.contrib.django.origin import header
from chanlite.types import Scope

if TYPE_CHECKING:
    from chanlite.websocket import WebSocket

logger = logging.getLogger("chanlite.contrib.django")

#: Scope key of the ``Set-Cookie`` headers ``login`` queues for the handshake response.
COOKIES_KEY = "chanlite.django.set_cookie"


class ScopeRequest:
    """The slice of ``HttpRequest`` that Django's auth functions touch, over a scope.

    ``login``/``logout`` receivers (``user_logged_in``...) get this as ``request``.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.session: Any = scope.get("session")
        self.user: Any = scope.get("user")
        self.META: dict[str, Any] = {}
        self.COOKIES: dict[str, str] = {}
        self.path = scope.get("path", "")


def _installed(app: str) -> bool:
    from django.apps import apps

    return bool(apps.is_installed(app))


def _anonymous() -> Any:
    if not _installed("django.contrib.auth"):
        return None
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()


def _new_session(session_key: str | None) -> Any:
    from importlib import import_module

    from django.conf import settings

    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


def load_session_and_user(cookie_header: str | None) -> tuple[Any, Any]:
    """Return ``(session, user)`` for a ``Cookie`` header (sync: runs on the bridge)."""
    from django.conf import settings
    from django.http.cookie import parse_cookie

    key: str | None = None
    try:
        key = parse_cookie(cookie_header or "").get(settings.SESSION_COOKIE_NAME) or None
        session = _new_session(key)
        session.keys()  # load now, on this thread, so later reads never hit the store
        user = _anonymous()
        if user is not None:
            from django.contrib.auth import get_user

            user = get_user(ScopeRequest({"session": session}))
        return session, user
    except Exception:
        # A malformed or tampered cookie, or a session store error: serve an anonymous
        # user with a fresh session rather than failing the request.
        # The key itself is a credential: it never goes into the log.
        logger.warning(
            "Could not load the session from the %s cookie; using an anonymous user",
            "given" if key else "missing",
            exc_info=True,
        )
        return _new_session(None), _anonymous()


async def populate_scope(scope: Scope) -> None:
    """Set ``scope["session"]`` and ``scope["user"]`` from the scope's ``Cookie`` header."""
    cookie = header(scope, b"cookie")
    session, user = await run_in(auth_executor(), load_session_and_user, cookie)
    scope["session"] = session
    if user is not None:
        scope["user"] = user


def _session_cookie(session: Any) -> bytes:
    from django.conf import settings
    from django.http import HttpResponse

    response = HttpResponse()
    if session.get_expire_at_browser_close():
        max_age, expires = None, None
    else:
        from django.utils.http import http_date

        max_age = session.get_expiry_age()
        expires = http_date(session.get_expiry_date().timestamp())
    response.set_cookie(
        settings.SESSION_COOKIE_NAME,
        session.session_key,
        max_age=max_age,
        expires=expires,
        domain=settings.SESSION_COOKIE_DOMAIN,
        path=settings.SESSION_COOKIE_PATH,
        secure=settings.SESSION_COOKIE_SECURE or None,
        httponly=settings.SESSION_COOKIE_HTTPONLY or None,
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )
    morsel = response.cookies[settings.SESSION_COOKIE_NAME]
    return str(morsel.OutputString()).encode("latin-1")


def _scope_of(ws: WebSocket) -> Scope:
    scope = ws.scope
    if "session" not in scope:
        raise RuntimeError(
            "login()/logout() need ws.session: serve the app through "
            "chanlite.contrib.django.get_asgi_application()"
        )
    return scope


async def login(ws: WebSocket, user: Any, backend: str | None = None) -> None:
    """Log *user* in on this connection and save the session (like ``django.contrib.auth.login``).

    The session key is rotated (no session fixation) and the session saved. Called before
    ``ws.accept()``, the new session cookie goes out with the handshake response, so the
    browser is logged in for its page requests too; after accept, only this socket (and
    anything reading ``ws.session.session_key``) knows the new key.
    """
    scope = _scope_of(ws)

    def do_login() -> bytes:
        from django.contrib.auth import login as django_login

        request = ScopeRequest(scope)
        django_login(request, user, backend)
        request.session.save()
        return _session_cookie(request.session)

    cookie = await run_sync(do_login)
    scope["user"] = user
    if not ws.accepted:
        scope.setdefault(COOKIES_KEY, []).append(cookie)


async def logout(ws: WebSocket) -> None:
    """Log the connection's user out and flush its session (like ``django.contrib.auth.logout``)."""
    scope = _scope_of(ws)

    def do_logout() -> Any:
        from django.contrib.auth import logout as django_logout

        request = ScopeRequest(scope)
        django_logout(request)
        return request.user

    scope["user"] = await run_sync(do_logout)
