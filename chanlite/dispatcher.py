"""Deprecated: the dispatcher became :mod:`chanlite.hub`; the broadcast contract lives in
:mod:`chanlite.broadcast`. The old names still import, with a warning naming the new place.
"""

from __future__ import annotations

import warnings
from typing import Any

_MOVED = {
    "BROADCAST": ("chanlite.broadcast", "BROADCAST"),
    "broadcast_event": ("chanlite.broadcast", "broadcast_event"),
    "encode_frame": ("chanlite.broadcast", "encode_frame"),
    "Dispatcher": ("chanlite.hub", "Hub"),
    "DispatchStats": ("chanlite.hub", "HubStats"),
    "Receiver": ("chanlite.hub", "Receiver"),
}


def __getattr__(name: str) -> Any:
    moved = _MOVED.get(name)
    if moved is None:
        raise AttributeError(f"module 'chanlite.dispatcher' has no attribute {name!r}")
    module, new = moved
    warnings.warn(
        f"chanlite.dispatcher.{name} is deprecated; use {module}.{new}",
        DeprecationWarning,
        stacklevel=2,
    )
    import importlib

    return getattr(importlib.import_module(module), new)
