"""Fixtures shared by the whole suite: the Redis plugin's real ``redis-server``.

The Redis plugin's tests hold the harness (start, stop, a free port); tests here that run
something on every shared layer reuse it rather than keep a copy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _load_redis_harness() -> Any:
    tests = ROOT / "plugins" / "chanlite-redis" / "tests"
    if str(tests) not in sys.path:
        sys.path.append(str(tests))  # its conftest imports its helper modules by name
    path = tests / "conftest.py"
    spec = importlib.util.spec_from_file_location("chanlite_redis_test_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_redis = _load_redis_harness()
redis_server = _redis.redis_server  # the plugin's session fixture: one redis-server
prefix = _redis.prefix  # a key prefix no other test uses
