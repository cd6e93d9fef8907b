"""Load an application from a ``module:attr`` or ``path/to/file.py:attr`` string."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any


class ImportFromStringError(Exception):
    """The target string could not be resolved to an object; the message says why."""


def import_from_string(target: str) -> Any:
    """Return the object named by *target*.

    ``"examples.echo:app"`` imports the module ``examples.echo``;
    ``"examples/chat/app.py:app"`` loads that file (its folder is put on ``sys.path``
    so it can import its neighbours). ``attr`` may be dotted: ``"pkg.mod:factory.app"``.
    """
    module_part, sep, attr_part = target.rpartition(":")
    if not sep or not module_part or not attr_part:
        raise ImportFromStringError(
            f'Target "{target}" must be in the format "<module>:<attribute>" '
            'or "<path/to/file.py>:<attribute>".'
        )
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        module = _load_file(module_part, target)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            if exc.name != module_part and not module_part.startswith(f"{exc.name}."):
                raise  # a missing import *inside* the module: show the real cause
            raise ImportFromStringError(
                f'Could not import module "{module_part}" (from "{target}").'
            ) from None
    obj: Any = module
    for name in attr_part.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise ImportFromStringError(
                f'Attribute "{attr_part}" not found in module "{module_part}".'
            ) from None
    return obj


def _load_file(path: str, target: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise ImportFromStringError(f'File "{path}" (from "{target}") does not exist.')
    folder = os.path.dirname(full)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(full))[0]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise ImportFromStringError(f'Cannot load "{path}" as a Python module.')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
