"""The errors of the layer contract, in one tree.

::

    LayerError
     +-- ChannelFull          (send() to a channel at capacity)
     +-- LayerConfigError     (also ValueError: bad URL, unknown or malformed option)
     +-- LayerNotFound        (also LookupError: no plugin for a URL scheme)
     +-- LayerUnavailable     (also ConnectionError: the backend is unreachable or broken;
     |    |                    each plugin subclasses it, e.g. the SQLite file is gone)
     |    +-- StorageNotFound (the storage does not exist and create_storage is False)
     +-- DecodeError          (also ValueError: a payload a codec cannot read)
     +-- ForeignChannel       (also ValueError: receive() on another layer's channel)
     +-- NotSupported         (also NotImplementedError: the layer lacks a capability)
     +-- HistoryError         (also ValueError: history misuse: a bad offset, a group
     |                         that keeps no history)     -- chanlite.layers.streams
     +-- HistoryGap           (the history after an offset cannot be served exactly)
     +-- PresenceError        (also ValueError: presence info too large, not encodable)

When Django Channels is installed, ``ChannelFull`` is also a subclass of
``channels.exceptions.ChannelFull`` and ``LayerConfigError`` of
``channels.exceptions.InvalidChannelLayerError``, so Channels code catching those
catches chanlite's. Only the tiny ``channels.exceptions`` module is imported for this
(no Django settings); Channels stays optional.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING


def _channels_exception(name: str, default: type[Exception]) -> type[Exception]:
    """``channels.exceptions.<name>`` when Django Channels is installed, else *default*."""
    try:
        if importlib.util.find_spec("channels") is None:
            return default
        module = importlib.import_module("channels.exceptions")
    except Exception:  # a broken or partial install: behave as if absent
        return default
    found = getattr(module, name, None)
    if isinstance(found, type) and issubclass(found, default):
        return found
    return default


if TYPE_CHECKING:
    _ChannelFullBase = Exception
    _InvalidLayerBase = ValueError
else:
    _ChannelFullBase = _channels_exception("ChannelFull", Exception)
    _InvalidLayerBase = _channels_exception("InvalidChannelLayerError", ValueError)


class LayerError(Exception):
    """Base class of every channel layer error."""


class ChannelFull(LayerError, _ChannelFullBase):
    """``send()`` found the channel at capacity; the message was not stored.

    Also ``channels.exceptions.ChannelFull`` when Channels is installed.
    """


class LayerConfigError(LayerError, _InvalidLayerBase):
    """A layer URL or option is malformed or unknown (also a ``ValueError``)."""


class LayerNotFound(LayerError, LookupError):
    """No installed plugin provides the layer URL's scheme."""


class LayerUnavailable(LayerError, ConnectionError):
    """The backend cannot be used now: unreachable, refused, or its storage broken.

    Each plugin raises a subclass naming its backend (``DatabaseFileError``,
    ``RedisUnavailable``) with a message that says what to do. Catch this one to handle
    any backend's outage.
    """


class StorageNotFound(LayerUnavailable):
    """The backend's storage (an SQLite file) does not exist, and the layer was told not
    to create it (:attr:`BaseLayer.create_storage` is False, as in ``chanlite send``)."""


class DecodeError(LayerError, ValueError):
    """A payload is not an event this codec wrote (malformed, truncated, foreign)."""


class ForeignChannel(LayerError, ValueError):
    """``receive()`` on a process-specific channel (``...!...``) of another layer object.

    Only the layer object that made a channel with ``new_channel()`` receives from it;
    waiting on another's would wait forever.
    """


class NotSupported(LayerError, NotImplementedError):
    """The layer does not offer a capability (history, presence) it was asked for.

    The message names the layer class and the capability, e.g. ``"MyLayer does not
    support history"``; a layer announces what it offers in ``extensions``.
    """

    def __init__(self, layer: object, capability: str, detail: str = "") -> None:
        name = layer.__name__ if isinstance(layer, type) else type(layer).__name__
        self.layer = name
        self.capability = capability
        text = f"{name} does not support {capability}"
        super().__init__(f"{text}: {detail}" if detail else text)
