"""Errors raised by the SQLite layer, on top of chanlite's layer errors.

::

    chanlite.layers.LayerError
     +-- chanlite.layers.LayerUnavailable   (also ConnectionError)
          +-- DatabaseFileError             (the file is locked, read-only, a folder,
                                             not SQLite, not ours, or gone)
"""

from __future__ import annotations

from chanlite.layers.base import LayerUnavailable


class DatabaseFileError(LayerUnavailable):
    """The layer's SQLite file cannot be used; the message names it and says what to do."""
