"""JSON for values the stdlib encoder refuses: the ``default`` hook chanlite uses.

Returned dicts and lists, :class:`~chanlite.responses.JSONResponse` and ``ws.send_json``
encode ``datetime``/``date``/``time`` (ISO 8601), ``UUID`` and ``Decimal`` (strings: no
precision lost), dataclass instances (as dicts) and enums (their value) out of the box; a
set is refused (no order to give it). ``App(json_default=func)`` replaces the hook for
that app's returned values and ``send_json``; call :func:`json_default` from it for
everything it does not handle::

    def encode(value):
        if isinstance(value, Money):
            return {"amount": str(value.amount), "currency": value.currency}
        return json_default(value)

    app = App(json_default=encode)
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["JSONDefault", "dumps", "json_default"]

JSONDefault = Callable[[Any], Any]
"""A ``json.dumps(default=...)`` hook: a value JSON cannot hold -> one it can."""


def json_default(value: Any) -> Any:
    """Turn *value* into something JSON holds, or raise ``TypeError`` naming its type."""
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(
        f"Object of type {type(value).__name__} is not JSON serializable; convert it "
        "first, or give the App a hook: App(json_default=func) (see chanlite.encoders)"
    )


def dumps(content: Any, default: JSONDefault | None = None) -> str:
    """Compact JSON text (no NaN or infinity), with *default* (else :func:`json_default`)
    for values the stdlib does not encode."""
    return json.dumps(
        content,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
        default=default or json_default,
    )
