"""chanlite-sqlite: a channel layer shared by every process on one machine through one file.

``App(layer="sqlite:///chat.db")``, ``chanlite run --layer sqlite:///chat.db``, or as a
Django Channels backend: ``"BACKEND": "chanlite_sqlite.SQLiteLayer"``.
"""

from __future__ import annotations

from chanlite_sqlite.__about__ import __version__
from chanlite_sqlite.errors import DatabaseFileError, DatabaseNotFound
from chanlite_sqlite.layer import SQLiteLayer

__all__ = ["DatabaseFileError", "DatabaseNotFound", "SQLiteLayer", "__version__"]
