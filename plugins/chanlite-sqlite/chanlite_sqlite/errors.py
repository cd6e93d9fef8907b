"""Errors raised by the SQLite layer, on top of chanlite's layer errors.

::

    chanlite.layers.LayerError
     +-- chanlite.layers.LayerUnavailable   (also ConnectionError)
          +-- DatabaseFileError             (the file is locked, read-only, a folder,
          |                                  not SQLite, not ours, or gone)
          |    +-- DatabaseNotFound         (also chanlite.layers.StorageNotFound)
          +-- chanlite.layers.StorageNotFound
"""

from __future__ import annotations

from chanlite.layers import LayerUnavailable, StorageNotFound


class DatabaseFileError(LayerUnavailable):
    """The layer's SQLite file cannot be used; the message names it and says what to do."""


class DatabaseNotFound(DatabaseFileError, StorageNotFound):
    """The file does not exist and the layer may not create it (``create_storage``)."""
