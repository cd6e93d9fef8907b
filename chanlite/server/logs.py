"""The server's logging: set-up, the text and JSON formats, and the access line.

``chanlite run`` prints to stderr with a timestamp on every line, or one JSON object per
line (``--log-format json``), unless ``--log-config FILE`` hands the whole set-up to
:func:`logging.config.dictConfig` (a ``.json`` or ``.yaml``/``.yml`` file, YAML needing
PyYAML) or :func:`logging.config.fileConfig` (any other file, e.g. ``.ini``), as uvicorn
does. A program that configured logging itself keeps its handlers.

Loggers: ``chanlite.server`` (start, stop, errors), ``chanlite.access`` (one line per
request, when it ends, and per WebSocket handshake), ``chanlite`` (the app side).
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import time
from typing import Any

from chanlite.server.state import access_logger
from chanlite.types import Scope

__all__ = ["TEXT_FORMAT", "JSONFormatter", "load_log_config", "log_access", "setup_logging"]

#: The text format: an ISO-like local timestamp with milliseconds, the level, the message.
TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s:  %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

# LogRecord attributes that are not "extra" fields of a call.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, any ``extra=`` fields (the access log's ``client``, ``method``, ``path``,
    ``status``, ``duration_ms``...) and ``exc_info`` as text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def load_log_config(path: str) -> None:
    """Apply a logging configuration file; raises ``ValueError`` with one line on failure."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as file:
                logging.config.dictConfig(json.load(file))
        elif path.endswith((".yaml", ".yml")):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise ValueError(
                    f"--log-config {path}: a YAML file needs PyYAML (pip install pyyaml)"
                ) from None
            with open(path, encoding="utf-8") as file:
                logging.config.dictConfig(yaml.safe_load(file))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ValueError as exc:
        if str(exc).startswith("--log-config"):
            raise
        raise ValueError(f"--log-config {path}: {exc}") from None
    except (OSError, KeyError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--log-config {path}: {type(exc).__name__}: {exc}") from None


def setup_logging(
    level: int, access_log: bool, log_config: str | None = None, log_format: str = "text"
) -> None:
    """Set chanlite's log levels and, unless logging is configured already (by the
    embedding program, or *log_config*), print to stderr in *log_format*."""
    logging.addLevelName(5, "TRACE")
    if log_config is not None:
        load_log_config(log_config)
    else:
        for name in ("chanlite.server", "chanlite.access", "chanlite"):
            logging.getLogger(name).setLevel(level)
        package = logging.getLogger("chanlite")
        if not package.handlers and not logging.getLogger().handlers:
            # Nobody configured logging (the command line): print to stderr ourselves.
            handler = logging.StreamHandler(sys.stderr)
            if log_format == "json":
                handler.setFormatter(JSONFormatter())
            else:
                handler.setFormatter(logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
            package.addHandler(handler)
            package.propagate = False
    if not access_log:
        logging.getLogger("chanlite.access").setLevel(logging.WARNING)


def log_access(scope: Scope, status: int, seconds: float, client_left: bool) -> None:
    """The access line of one HTTP request, when it ends: ``127.0.0.1:50412 - "GET /x
    HTTP/1.1" 200 3.1ms``, with ``(client left)`` for a response the client did not wait
    for (an event stream it closed, say)."""
    client = scope["client"]
    query = scope["query_string"]
    path = scope["path"] + ("?" + query.decode("latin-1") if query else "")
    duration_ms = round(seconds * 1000, 1)
    access_logger.info(
        '%s - "%s %s HTTP/%s" %s %.1fms%s',
        f"{client[0]}:{client[1]}" if client else "-",
        scope["method"],
        path,
        scope["http_version"],
        status or "-",
        duration_ms,
        " (client left)" if client_left else "",
        extra={
            "client": f"{client[0]}:{client[1]}" if client else None,
            "method": scope["method"],
            "path": path,
            "status": status or None,
            "duration_ms": duration_ms,
            "client_left": client_left,
        },
    )
