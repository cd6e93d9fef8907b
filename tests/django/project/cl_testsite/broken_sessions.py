"""A session engine whose store always fails, as a broken cache or database would."""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.base import SessionBase


class SessionStore(SessionBase):  # type: ignore[misc]
    def load(self) -> dict[str, Any]:
        raise ConnectionError("session store is down")
