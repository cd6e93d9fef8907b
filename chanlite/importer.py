"""Load an application from a ``module:attr`` or ``path/to/file.py:attr`` string.

::

    AppLoadError               (the app could not be loaded; str() is the one-line message)
     +-- ImportFromStringError (the target string names nothing importable)

:func:`load_app` is what ``chanlite run`` and its worker processes call; they turn an
:class:`AppLoadError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any


class AppLoadError(Exception):
    """The application could not be loaded; ``str()`` is the one-line message to show.

    When the app's own code raised, that error is the ``__cause__`` (for a traceback at
    ``--log-level debug``)."""


class ImportFromStringError(AppLoadError):
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


def load_app(target: str, layer: str | None = None) -> Any:
    """Import the ASGI application *target* and apply a layer URL to it (``--layer``).

    Raises :class:`AppLoadError` with one line that says what went wrong: the target
    cannot be found, importing it raised (the error is the ``__cause__``), it is not
    callable, or the layer URL was refused.
    """
    try:
        app = import_from_string(target)
    except ImportFromStringError as exc:
        raise AppLoadError(f"Could not load {target}: {exc}") from None
    except Exception as exc:
        raise AppLoadError(f"Could not load {target}: {type(exc).__name__}: {exc}") from exc
    if not callable(app):
        raise AppLoadError(f"{target} is a {type(app).__name__}, not an ASGI application")
    if layer and hasattr(app, "configure_layer"):
        try:
            app.configure_layer(layer)
        except Exception as exc:
            message = f"Could not use --layer {layer}: {type(exc).__name__}: {exc}"
            raise AppLoadError(message) from exc
    return app
