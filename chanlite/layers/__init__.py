"""Channel layers: the contract, the registry and the built-in in-memory layer."""

from chanlite.layers.base import (
    BaseLayer,
    BlockingSends,
    ChannelFull,
    DecodeError,
    Event,
    ForeignChannel,
    LayerConfigError,
    LayerError,
    LayerNotFound,
    LayerUnavailable,
    Message,
)
from chanlite.layers.registry import get_layer, installed_layers, layer_class

__all__ = [
    "BaseLayer",
    "BlockingSends",
    "ChannelFull",
    "DecodeError",
    "Event",
    "ForeignChannel",
    "LayerConfigError",
    "LayerError",
    "LayerNotFound",
    "LayerUnavailable",
    "Message",
    "get_layer",
    "installed_layers",
    "layer_class",
]
