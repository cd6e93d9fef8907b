"""Layers as Channels ``CHANNEL_LAYERS`` backends, and the processes that use them.

Every test here drives real Channels code in its own OS process (Django's settings are per
process), so a layer is described by what a Channels project writes in its settings: the
``BACKEND`` class path and the ``CONFIG``. The Redis layer runs on a real redis-server,
started by the Redis plugin's own test fixture (``redis_server``, see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).parent / "project"
CAPACITY = 20
# Channels' per-channel capacities: a glob pattern (as Channels reads them) -> capacity.
CHANNEL_CAPACITY = {"compat.tiny*": 2}


@dataclass(frozen=True)
class LayerSpec:
    """A chanlite layer as a Channels project configures it."""

    name: str
    backend: str
    config: dict[str, Any]

    def env(self) -> dict[str, str]:
        """The environment of a process serving the compat site on this layer."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "COMPAT_"))}
        env.update(
            COMPAT_BACKEND=self.backend,
            COMPAT_CONFIG=json.dumps(self.config),
            DJANGO_SETTINGS_MODULE="compat_site.settings",
            PYTHONPATH=os.pathsep.join([str(PROJECT), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            PYTHONUNBUFFERED="1",
        )
        return env


def make_layer(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> LayerSpec:
    if name == "memory":
        config: dict[str, Any] = {"capacity": CAPACITY, "channel_capacity": CHANNEL_CAPACITY}
        return LayerSpec(name, "chanlite.layers.memory.MemoryLayer", config)
    if name == "sqlite":
        config = {"path": str(tmp_path / "layer.db"), "capacity": CAPACITY}
        config["channel_capacity"] = CHANNEL_CAPACITY
        return LayerSpec(name, "chanlite_sqlite.SQLiteLayer", config)
    if name == "redis":
        server = request.getfixturevalue("redis_server")
        prefix = f"compat{secrets.token_hex(4)}:"
        config = {"hosts": [server.url], "prefix": prefix, "capacity": CAPACITY}
        config["channel_capacity"] = CHANNEL_CAPACITY
        return LayerSpec(name, "chanlite_redis.RedisLayer", config)
    raise ValueError(name)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def layer(request: pytest.FixtureRequest, tmp_path: Path) -> LayerSpec:
    """Every chanlite layer, one at a time."""
    return make_layer(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "redis"])
def shared_layer(request: pytest.FixtureRequest, tmp_path: Path) -> LayerSpec:
    """The layers that several processes share."""
    return make_layer(request.param, request, tmp_path)
