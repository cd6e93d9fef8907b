# mypy: disable-error-code="import-untyped"
"""The ``CHANLITE`` Django setting: defaults, validation, lazy reads.

Nothing is read at import time. Values are read on first use and cached; Django's
``setting_changed`` signal (sent by ``override_settings``) clears the cache, so tests can
change ``CHANLITE`` (or ``DATABASES``, which the defaults depend on) per test.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

#: Every key of ``settings.CHANLITE`` with its default; ``None`` means "work it out".
DEFAULTS: dict[str, Any] = {
    # "module:attr" of the chanlite App serving the sockets. Required by the ASGI entry.
    "APP": None,
    # The channel layer URL for the app and the sync senders; None picks
    # sqlite:///<BASE_DIR>/chanlite.db when chanlite-sqlite is installed, else memory://.
    "LAYER": None,
    # Reject WebSocket handshakes from origins ALLOWED_HOSTS/CSRF_TRUSTED_ORIGINS do not allow.
    "CHECK_ORIGIN": True,
    # Origins allowed besides those (e.g. "https://app.example.com", "https://*.example.com",
    # "null"); ["*"] allows every origin.
    "ALLOWED_ORIGINS": [],
    # Threads of the ORM bridge; None: 1 when a database is SQLite (one connection, so no
    # writer contention in this process), else 4. Each thread holds its own DB connection.
    "DB_THREADS": None,
    # On SQLite connections: WAL journal, a busy timeout and BEGIN IMMEDIATE transactions,
    # so concurrent writers wait for each other instead of failing with "database is locked".
    "SQLITE_TUNING": True,
    # Seconds a SQLite writer waits for the lock (when DATABASES OPTIONS sets no timeout).
    "SQLITE_BUSY_TIMEOUT": 20.0,
    # Serve static files in DEBUG, like runserver (needs django.contrib.staticfiles).
    "STATIC_FILES": True,
    # Default options for `manage.py chanlite` (server option names: {"port": 8001}).
    "SERVER": {},
}


@dataclass(frozen=True)
class ChanliteSettings:
    """The validated ``CHANLITE`` setting."""

    app: str | None
    layer: str
    check_origin: bool
    allowed_origins: tuple[str, ...]
    db_threads: int
    sqlite_tuning: bool
    sqlite_busy_timeout: float
    static_files: bool
    server: dict[str, Any]


_lock = threading.Lock()
_cached: ChanliteSettings | None = None
_reset_hooks: list[Callable[[], None]] = []


def get() -> ChanliteSettings:
    """The current ``CHANLITE`` settings (read from ``django.conf.settings`` once)."""
    global _cached
    current = _cached
    if current is None:
        with _lock:
            current = _cached
            if current is None:
                current = _cached = _load()
    return current


def reset() -> None:
    """Forget the cached settings (and what depends on them, e.g. the ORM thread pool)."""
    global _cached
    with _lock:
        _cached = None
    for hook in list(_reset_hooks):
        hook()


def on_reset(hook: Callable[[], None]) -> None:
    """Call *hook* whenever the settings are reset."""
    _reset_hooks.append(hook)


# Settings whose change can change what get() returns.
WATCHED = frozenset({"CHANLITE", "DATABASES", "BASE_DIR"})


def setting_changed(*, setting: str, **kwargs: Any) -> None:
    """Receiver for Django's ``setting_changed``: reset when a watched setting changes."""
    if setting in WATCHED:
        reset()


def _load() -> ChanliteSettings:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    raw = getattr(settings, "CHANLITE", None) or {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"settings.CHANLITE must be a dict, not {type(raw).__name__}")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        known = ", ".join(DEFAULTS)
        raise ImproperlyConfigured(
            f"Unknown key(s) in settings.CHANLITE: {', '.join(unknown)} (known: {known})"
        )
    values = {**DEFAULTS, **raw}

    def fail(key: str, wanted: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"settings.CHANLITE[{key!r}] must be {wanted}, not {values[key]!r}"
        )

    app = values["APP"]
    if app is not None and (not isinstance(app, str) or ":" not in app):
        raise fail("APP", 'a "module:attribute" string such as "mysite.realtime:app"')
    layer = values["LAYER"]
    if layer is None:
        layer = default_layer(getattr(settings, "BASE_DIR", None))
    elif not isinstance(layer, str) or "://" not in layer:
        raise fail("LAYER", 'a layer URL such as "sqlite:///chanlite.db"')
    origins = values["ALLOWED_ORIGINS"]
    if isinstance(origins, str) or not all(isinstance(o, str) for o in origins):
        raise fail("ALLOWED_ORIGINS", "a list of origin strings")
    threads = values["DB_THREADS"]
    if threads is None:
        threads = 1 if uses_sqlite(settings.DATABASES) else 4
    elif not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise fail("DB_THREADS", "a positive int (or None)")
    timeout = values["SQLITE_BUSY_TIMEOUT"]
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
        raise fail("SQLITE_BUSY_TIMEOUT", "a number of seconds")
    server = values["SERVER"]
    if not isinstance(server, dict):
        raise fail("SERVER", "a dict of server options")
    return ChanliteSettings(
        app=app,
        layer=layer,
        check_origin=bool(values["CHECK_ORIGIN"]),
        allowed_origins=tuple(origins),
        db_threads=threads,
        sqlite_tuning=bool(values["SQLITE_TUNING"]),
        sqlite_busy_timeout=float(timeout),
        static_files=bool(values["STATIC_FILES"]),
        server=dict(server),
    )


def uses_sqlite(databases: dict[str, Any]) -> bool:
    """True when any configured database uses Django's SQLite backend."""
    return any("sqlite3" in str(db.get("ENGINE", "")) for db in databases.values())


def default_layer(base_dir: Any) -> str:
    """``sqlite:///<base_dir>/chanlite.db`` if the SQLite layer is installed, else memory."""
    from chanlite.layers.registry import installed_layers

    if any(scheme == "sqlite" for scheme, _, _ in installed_layers()):
        folder = os.path.abspath(str(base_dir)) if base_dir is not None else os.getcwd()
        # sqlite:/// + an absolute path gives four slashes: the usual absolute-path form.
        return "sqlite:///" + quote(os.path.join(folder, "chanlite.db"))
    return "memory://"
