"""The Redis plugin's redis-server fixture, reused (not copied) by the operations tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _load_redis_harness() -> Any:
    tests = ROOT / "plugins" / "chanlite-redis" / "tests"
    path = tests / "conftest.py"
    # Its conftest imports its sibling modules (redis_nodes), as pytest lets it there.
    if str(tests) not in sys.path:
        sys.path.append(str(tests))
    spec = importlib.util.spec_from_file_location("chanlite_redis_ops_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


redis_server = _load_redis_harness().redis_server
