"""chanlite: real-time Python made small."""

from chanlite.__about__ import __version__

__all__ = ["__version__"]
