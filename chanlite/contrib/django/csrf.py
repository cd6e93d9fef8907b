# mypy: disable-error-code="import-untyped"
"""Django's CSRF check for chanlite's HTTP routes in a Django site.

Browsers send the session cookie with a cross-site form POST, so an unsafe request to a
chanlite route would run in the victim's name, while the same request to a Django view is
refused by ``CsrfViewMiddleware``. Here every request with an unsafe method (anything but
GET, HEAD, OPTIONS, TRACE) to a chanlite HTTP route goes through that same middleware's
``process_view`` (the project's subclass of it when ``MIDDLEWARE`` names one), with its
settings: token from the ``csrftoken`` cookie or the session, ``X-CSRFToken`` header or
``csrfmiddlewaretoken`` form field, ``Origin``/``Referer`` against the host and
``CSRF_TRUSTED_ORIGINS``. A refusal is Django's own 403 (``CSRF_FAILURE_VIEW``), logged
by Django on ``django.security.csrf``. The check applies whether or not ``MIDDLEWARE``
lists ``CsrfViewMiddleware``: a route opts out with Django's ``@csrf_exempt``::

    @app.http("/hook", methods=["POST"])
    @csrf_exempt
    async def hook(request): ...
"""

from __future__ import annotations

import tempfile
from typing import Any

from chanlite.contrib.django.db import auth_executor, run_in
from chanlite.types import Message, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CHUNK = 64 * 1024


def needs_check(scope: Scope, endpoint: Any) -> bool:
    """True when a request to *endpoint* must pass the CSRF check before it runs."""
    return scope["method"] not in SAFE_METHODS and not getattr(endpoint, "csrf_exempt", False)


def _middleware_class() -> type[Any]:
    from django.conf import settings
    from django.middleware.csrf import CsrfViewMiddleware
    from django.utils.module_loading import import_string

    for path in settings.MIDDLEWARE:
        cls = import_string(path)
        if isinstance(cls, type) and issubclass(cls, CsrfViewMiddleware):
            found: type[Any] = cls
            return found
    default: type[Any] = CsrfViewMiddleware
    return default


class _Borrowed:
    """The body file lent to Django, which closes what it reads; the app reads it next."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        pass


def _check(scope: Scope, body: Any, endpoint: Any) -> Any:
    """Django's verdict on the request (sync, on a bridge thread): None or a response."""
    from django.core.handlers.asgi import ASGIRequest
    from django.core.handlers.exception import response_for_exception

    request = ASGIRequest(scope, _Borrowed(body))
    if scope.get("session") is not None:
        request.session = scope["session"]  # CSRF_USE_SESSIONS keeps the token there
    middleware = _middleware_class()(lambda request: None)
    try:
        middleware.process_request(request)
        return middleware.process_view(request, endpoint, (), {})
    except Exception as exc:
        # A body over DATA_UPLOAD_MAX_MEMORY_SIZE, a malformed form...: answered (400)
        # and logged exactly as Django answers it for its own views.
        return response_for_exception(request, exc)
    finally:
        body.seek(0)


async def _read_body(receive: Receive, body: Any) -> int | None:
    """Read the whole request body into *body*; its size, or None if the client left."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        size += int(body.write(message.get("body", b"")))
        if not message.get("more_body", False):
            body.seek(0)
            return size


def _replay(body: Any, size: int, receive: Receive) -> Receive:
    """A receive() that gives the app the body read for the check, then the real one."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunk = body.read(_CHUNK)
        more = body.tell() < size
        if not more:
            done = True
            body.close()
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replay


async def _send_response(response: Any, send: Send) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    for cookie in response.cookies.values():
        headers.append((b"set-cookie", cookie.output(header="").strip().encode("latin-1")))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})


async def protect(scope: Scope, receive: Receive, send: Send, endpoint: Any) -> Receive | None:
    """Run Django's CSRF check on an unsafe request to *endpoint*.

    Returns the ``receive`` the app must use (the body was read for the check), or None
    when the request was refused (Django's answer has been sent) or the client left.
    """
    from django.conf import settings

    # Spooled like Django's own request bodies: on disk past FILE_UPLOAD_MAX_MEMORY_SIZE.
    # The replay closes it once the app has read it all.
    body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)  # noqa: SIM115
    try:
        size = await _read_body(receive, body)
        refusal = None
        if size is not None:
            refusal = await run_in(auth_executor(), _check, scope, body, endpoint)
        if size is None or refusal is not None:
            body.close()
            if refusal is not None:
                await _send_response(refusal, send)
            return None
    except BaseException:
        body.close()
        raise
    return _replay(body, size, receive)
