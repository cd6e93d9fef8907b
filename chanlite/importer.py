"""Load an application from a ``module:attr`` or ``path/to/file.py:attr`` string.

::

    AppLoadError               (the app could not be loaded; str() is the one-line message)
     +-- ImportFromStringError (the target string names nothing importable)

:func:`load_app` is what ``chanlite run`` and its worker processes call; they turn an
:class:`AppLoadError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from types import ModuleType
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
    A target without ``:attr`` or with a missing attribute is refused with the ASGI apps
    the module does have (``did you mean "app.py:app"?``).
    """
    module_part, sep, attr_part = target.rpartition(":")
    if not sep or not module_part or not attr_part:
        raise ImportFromStringError(_missing_attribute_message(target))
    module = _import_module(module_part, target)
    obj: Any = module
    for name in attr_part.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            message = f'Attribute "{attr_part}" not found in module "{module_part}".'
            raise ImportFromStringError(
                message + _suggest(module, module_part, attr_part)
            ) from None
    return obj


def _import_module(module_part: str, target: str) -> ModuleType:
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        return _load_file(module_part, target)
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        if exc.name != module_part and not module_part.startswith(f"{exc.name}."):
            raise  # a missing import *inside* the module: show the real cause
        raise ImportFromStringError(
            f'Could not import module "{module_part}" (from "{target}").'
        ) from None


def _missing_attribute_message(target: str) -> str:
    message = (
        f'Target "{target}" must be in the format "<module>:<attribute>" '
        'or "<path/to/file.py>:<attribute>".'
    )
    module_part = target.rstrip(":")
    if not module_part or ":" in module_part:
        return message
    try:
        module = _import_module(module_part, target)
    except Exception:  # it does not import either: the format is all there is to say
        return message
    return message + _suggest(module, module_part, "")


def _suggest(module: ModuleType, module_part: str, wanted: str) -> str:
    """`` Did you mean "<module>:<app>"? ASGI apps in <module>: ...`` or ``""``."""
    apps = asgi_apps(module)
    if not apps:
        return f' "{module_part}" has no ASGI application at its top level.'
    close = difflib.get_close_matches(wanted, apps, n=1, cutoff=0.5) if wanted else []
    best = close[0] if close else ("app" if "app" in apps else apps[0])
    return f' Did you mean "{module_part}:{best}"? ASGI apps in {module_part}: {", ".join(apps)}.'


def asgi_apps(module: ModuleType) -> list[str]:
    """The names of the ASGI applications at the top level of *module*, in order."""
    found = []
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, type | ModuleType):
            continue
        if inspect.isfunction(value) and value.__module__ != module.__name__:
            continue  # an imported helper, not this module's app
        if type(value).__module__ in ("typing", "types", "collections.abc"):
            continue  # type aliases (Scope, Receive, Send) are callable too
        if not_asgi(value) is None:
            found.append(name)
    return found


def not_asgi(obj: Any) -> str | None:
    """What *obj* is when it is not an ASGI 3 application (``"a function f(ws,
    event)"``), or None when it can be called as ``await obj(scope, receive, send)``."""
    if not callable(obj):
        return f"{_article(type(obj).__name__)} {type(obj).__name__} ({_short(obj)})"
    if isinstance(obj, type):
        return f"the class {obj.__qualname__} (create an instance of it)"
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to inspect
        return None
    try:
        signature.bind(None, None, None)
    except TypeError:
        kind = "function" if inspect.isfunction(obj) else type(obj).__name__
        name = getattr(obj, "__qualname__", type(obj).__name__)
        return f"{_article(kind)} {kind} {name}({_parameters(signature)})"
    return None


def _parameters(signature: inspect.Signature) -> str:
    """The parameter names only: annotations would drown what is wrong."""
    names = []
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            names.append(f"*{param.name}")
        elif param.kind is param.VAR_KEYWORD:
            names.append(f"**{param.name}")
        else:
            names.append(param.name)
    return ", ".join(names)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 40 else text[:37] + "..."


def _module_name(module_part: str) -> str:
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        return os.path.splitext(os.path.basename(module_part))[0]
    return module_part


def _load_file(path: str, target: str) -> ModuleType:
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
    found = not_asgi(app)
    if found is not None:
        module_part = target.rpartition(":")[0]
        hint = _suggest(sys.modules[_module_name(module_part)], module_part, "")
        raise AppLoadError(
            f"{target} is {found}, not an ASGI application (called as "
            f"app(scope, receive, send)).{hint}"
        )
    if layer and hasattr(app, "configure_layer"):
        try:
            app.configure_layer(layer)
        except Exception as exc:
            message = f"Could not use --layer {layer}: {type(exc).__name__}: {exc}"
            raise AppLoadError(message) from exc
    return app
