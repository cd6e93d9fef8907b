"""Channel layers: the contract, the toolkit for writing one (see README.md), the registry."""

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
from chanlite.layers.codec import Codec, MsgpackCodec
from chanlite.layers.demux import LocalDemux
from chanlite.layers.inbox import LocalInbox
from chanlite.layers.registry import get_layer, installed_layers, layer_class

__all__ = [
    "BaseLayer",
    "BlockingSends",
    "ChannelFull",
    "Codec",
    "DecodeError",
    "Event",
    "ForeignChannel",
    "LayerConfigError",
    "LayerError",
    "LayerNotFound",
    "LayerUnavailable",
    "LocalDemux",
    "LocalInbox",
    "Message",
    "MsgpackCodec",
    "get_layer",
    "installed_layers",
    "layer_class",
]
