"""chanlite-sqlite."""

from chanlite_sqlite.layer import SQLiteLayer

__all__ = ["SQLiteLayer"]
