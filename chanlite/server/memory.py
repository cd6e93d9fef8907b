"""Giving the memory an attack (or a burst) took back to the operating system.

CPython frees a connection's buffers when it closes, but glibc's allocator keeps freed
memory inside the process: large buffers freed in the middle of the heap (and in the
arenas of worker threads) stay resident, so a server that took 150 MiB during a flood of
slow readers kept it after they left. ``malloc_trim(0)`` hands the free pages back.

Some of those buffers are not even freed yet: an app that ended on the client's
disconnect keeps its last messages in a reference cycle (exception, traceback, frames)
until the cyclic garbage collector runs, and after an attack nothing allocates enough to
start it. So the server collects first (:func:`collect_garbage`, on the loop), then trims
(:func:`release_free_memory`, on a worker thread: ctypes releases the GIL and the trim
walks the heap). It does so when a connection that held large buffers (its writes backed
up above ``high_water``, or its reading was paused for the app) is gone, at most once
every :data:`TRIM_INTERVAL` seconds. Elsewhere than Linux with glibc the trim is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import platform
import sys
from collections.abc import Callable

logger = logging.getLogger("chanlite.server")

#: Seconds between two trims at least (a trim costs a walk of the heap).
TRIM_INTERVAL = 2.0

_trim: Callable[[int], int] | None = None
_looked_up = False


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _looked_up
    if not _looked_up:
        _looked_up = True
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                trim = libc.malloc_trim
            except (OSError, AttributeError):  # an unusual libc: nothing to give back
                return None
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
            _trim = trim
    return _trim


def supported() -> bool:
    """Whether :func:`release_free_memory` can do anything on this platform."""
    return _malloc_trim() is not None


def collect_garbage() -> int:
    """Free what only reference cycles still hold (a full collection); the count found."""
    return gc.collect()


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
