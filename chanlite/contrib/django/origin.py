# mypy: disable-error-code="import-untyped"
"""Origin check for WebSocket handshakes (cross-site WebSocket hijacking).

Browsers send cookies with a WebSocket handshake to any site, and the same-origin policy
does not apply to WebSockets, so a page on another site could open an authenticated socket
in the user's name. Browsers always send ``Origin`` on a handshake, so checking it stops
that. A handshake is allowed when:

* ``CHANLITE["CHECK_ORIGIN"]`` is false, or the request has no ``Origin`` (not a browser,
  so there is no victim's cookie to ride on);
* the origin is listed in ``CHANLITE["ALLOWED_ORIGINS"]`` or ``CSRF_TRUSTED_ORIGINS``
  (``https://*.example.com`` wildcards as Django's CSRF check reads them; ``"*"`` allows
  every origin, ``"null"`` the opaque origin of sandboxed frames and files);
* the origin's host matches an explicit ``ALLOWED_HOSTS`` pattern (``"*"`` is not taken as
  a blanket allow for origins);
* or the origin is the site itself: its host and port equal the ``Host`` header, which
  ``ALLOWED_HOSTS`` allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from chanlite.contrib.django import conf
from chanlite.types import Scope


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header *name* (lower-case bytes) in *scope*, or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def allowed_hosts() -> list[str]:
    """``ALLOWED_HOSTS`` as Django applies it (with its DEBUG defaults when empty)."""
    from django.conf import settings

    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def _matches_listed(origin: str, listed: Iterable[str]) -> bool:
    from django.utils.http import is_same_domain

    parsed = urlsplit(origin)
    for entry in listed:
        if entry in ("*", origin):
            return True
        if "*" in entry:
            pattern = urlsplit(entry)
            if pattern.scheme == parsed.scheme and is_same_domain(
                parsed.netloc, pattern.netloc.lstrip("*")
            ):
                return True
    return False


def origin_allowed(scope: Scope) -> bool:
    """True when the handshake in *scope* may proceed (see the module docstring)."""
    settings = conf.get()
    if not settings.check_origin:
        return True
    origin = header(scope, b"origin")
    if origin is None:
        return True
    try:
        return _allowed(origin.strip().lower(), scope, settings.allowed_origins)
    except ValueError:  # an origin no URL parser accepts ("http://[oops") is not allowed
        return False


def _allowed(origin: str, scope: Scope, allowed_origins: Iterable[str]) -> bool:
    from django.conf import settings as django_settings
    from django.http.request import split_domain_port, validate_host

    listed = [*allowed_origins, *getattr(django_settings, "CSRF_TRUSTED_ORIGINS", ())]
    if _matches_listed(origin, [entry.lower() for entry in listed]):
        return True
    if origin == "null":
        return False
    parsed = urlsplit(origin)
    netloc = parsed.netloc
    if parsed.scheme not in ("http", "https") or not netloc:
        return False
    hosts = allowed_hosts()
    domain, _ = split_domain_port(netloc)
    if domain and validate_host(domain, [h for h in hosts if h != "*"]):
        return True
    host = (header(scope, b"host") or "").strip().lower()
    if host and host == netloc:
        host_domain, _ = split_domain_port(host)
        return bool(host_domain) and bool(validate_host(host_domain, hosts))
    return False
