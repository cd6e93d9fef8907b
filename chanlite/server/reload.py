"""File watching for ``chanlite run --reload`` (watchfiles, i.e. inotify and friends)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence

import watchfiles


class Reloader:
    """Yields the changed Python files under *dirs*, polling at most every *timeout_ms*."""

    def __init__(self, dirs: Sequence[str], stop: threading.Event, timeout_ms: int = 500) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs] or [os.getcwd()]
        self._changes: Iterator[set[tuple[watchfiles.Change, str]]] = watchfiles.watch(
            *self.dirs,
            watch_filter=watchfiles.PythonFilter(),
            stop_event=stop,
            rust_timeout=timeout_ms,
            yield_on_timeout=True,
            debounce=200,
            raise_interrupt=False,
        )
        # The watcher starts on the first step of the generator: take it now, so a change
        # made right after start-up is seen (it waits at most timeout_ms).
        next(self._changes, None)

    def changed(self) -> list[str]:
        """Block until a change or the poll timeout; the changed paths (may be empty)."""
        try:
            changes = next(self._changes)
        except StopIteration:
            return []
        return sorted({os.path.relpath(path) for _, path in changes})
