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
* or the origin is served the way the request is, with the same scheme (``https`` for a
  secure request: ``wss``, or ``SECURE_PROXY_SSL_HEADER`` as Django reads it) and the same
  port as the ``Host`` header, and its host either matches an explicit ``ALLOWED_HOSTS``
  pattern (``"*"`` is not taken as a blanket allow for origins) or is the ``Host`` itself,
  which ``ALLOWED_HOSTS`` allows. Another port or scheme on an allowed host is another
  origin (another server, perhaps not the project's), so it must be listed.
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


def is_secure(scope: Scope) -> bool:
    """Whether the request came over TLS, as Django's ``request.is_secure()`` decides."""
    from django.conf import settings

    if scope.get("scheme") in ("https", "wss"):
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not proxy:
        return False
    meta_name, secure_value = proxy
    if not meta_name.startswith("HTTP_"):
        return False
    value = header(scope, meta_name[5:].lower().replace("_", "-").encode("latin-1"))
    return value is not None and value.split(",", 1)[0].strip() == secure_value


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _allowed(origin: str, scope: Scope, allowed_origins: Iterable[str]) -> bool:
    from django.conf import settings as django_settings
    from django.http.request import split_domain_port, validate_host

    listed = [*allowed_origins, *getattr(django_settings, "CSRF_TRUSTED_ORIGINS", ())]
    if _matches_listed(origin, [entry.lower() for entry in listed]):
        return True
    if origin == "null":
        return False
    parsed = urlsplit(origin)
    scheme = "https" if is_secure(scope) else "http"
    # Browsers never put credentials in an Origin; a netloc with "@" is not a host.
    if parsed.scheme != scheme or not parsed.netloc or "@" in parsed.netloc:
        return False
    host = (header(scope, b"host") or "").strip().lower()
    host_domain, host_port = split_domain_port(host)
    if not host_domain:
        return False
    if (parsed.port or _DEFAULT_PORTS[scheme]) != int(host_port or _DEFAULT_PORTS[scheme]):
        return False
    domain, _ = split_domain_port(parsed.netloc)
    hosts = allowed_hosts()
    if domain and validate_host(domain, [h for h in hosts if h != "*"]):
        return True
    return domain == host_domain and bool(validate_host(host_domain, hosts))
