"""Find a layer class by URL scheme, through the ``chanlite.layers`` entry points.

Lookup is lazy (nothing is scanned at import) and by name. The built-in ``memory`` layer
is registered the same way in chanlite's own metadata, with a fallback for running from a
source tree that was never installed.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from chanlite.layers.base import BaseLayer, LayerConfigError, LayerNotFound

GROUP = "chanlite.layers"

_BUILTIN = {"memory": "chanlite.layers.memory:MemoryLayer"}

# Schemes whose plugin we know by name, so the error can say what to install.
_KNOWN_PACKAGES = {
    "sqlite": "chanlite-sqlite",
    "redis": "chanlite-redis",
    "rediss": "chanlite-redis",
}


def install_hint(package: str) -> str:
    """How to install the plugin *package*: from PyPI, and from a chanlite checkout (where
    each plugin is a folder of ``plugins/``) until it is published."""
    return f"pip install {package} (from a chanlite checkout: pip install -e plugins/{package})"


def _entry_points(scheme: str) -> list[EntryPoint]:
    found = list(entry_points(group=GROUP, name=scheme))
    # One distribution installed twice (e.g. editable + metadata leftovers) is not a clash.
    unique: dict[str, EntryPoint] = {}
    for ep in found:
        unique.setdefault(ep.value, ep)
    return list(unique.values())


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else ep.value


def layer_class(scheme: str) -> type[BaseLayer]:
    """Return the layer class registered for *scheme*.

    Raises :class:`LayerNotFound` naming the package to install when none is, and
    :class:`LayerConfigError` naming both distributions when two claim the scheme.
    """
    eps = _entry_points(scheme)
    if len(eps) > 1:
        names = " and ".join(f"{_dist_name(ep)} ({ep.value})" for ep in eps)
        raise LayerConfigError(
            f"Layer scheme {scheme!r} is claimed by more than one installed plugin: {names}. "
            "Uninstall one of them."
        )
    if eps:
        obj: Any = eps[0].load()
    elif scheme in _BUILTIN:
        module, _, attr = _BUILTIN[scheme].partition(":")
        obj = getattr(importlib.import_module(module), attr)
    else:
        raise LayerNotFound(_not_found_message(scheme))
    if not (isinstance(obj, type) and issubclass(obj, BaseLayer)):
        raise LayerConfigError(
            f"The entry point {scheme!r} in {GROUP!r} points at {obj!r}, "
            "which is not a chanlite.layers.BaseLayer subclass"
        )
    return obj


def _not_found_message(scheme: str) -> str:
    installed = sorted({row[0] for row in installed_layers()})
    listing = ", ".join(f"{name}://" for name in installed)
    # A typo of an installed (or known) scheme is far likelier than a missing plugin:
    # say so first, and only then what could be installed.
    others = [name for name in installed if name != scheme]
    close = difflib.get_close_matches(scheme, others, n=1, cutoff=0.6)
    package = _KNOWN_PACKAGES.get(scheme)
    if close and package is None:
        return (
            f"No channel layer is installed for the scheme {scheme!r}; did you mean "
            f"{close[0]}://? Installed schemes: {listing}"
        )
    known = [name for name in _KNOWN_PACKAGES if name != scheme]
    close = difflib.get_close_matches(scheme, known, n=1, cutoff=0.6)
    if package is None and close:
        return (
            f"No channel layer is installed for the scheme {scheme!r}; did you mean "
            f"{close[0]}:// ({install_hint(_KNOWN_PACKAGES[close[0]])})? Installed schemes: "
            f"{listing}"
        )
    hint = (
        f"install it with: {install_hint(package)}"
        if package
        else f"install a package that registers the entry point {scheme!r} in the group {GROUP!r}"
    )
    return (
        f"No channel layer is installed for the scheme {scheme!r}; {hint}. "
        f"Installed schemes: {listing}"
    )


def get_layer(url: str) -> BaseLayer:
    """Build the layer a URL names: ``memory://``, ``sqlite:///chat.db?capacity=200``..."""
    if not isinstance(url, str) or "://" not in url:
        raise LayerConfigError(
            f"A layer URL looks like 'memory://' or 'sqlite:///chat.db', not {url!r}"
        )
    scheme = url.split("://", 1)[0].lower()
    return layer_class(scheme).from_url(url)


def installed_layers() -> list[tuple[str, str, str]]:
    """``(scheme, distribution, version)`` for every registered layer plugin."""
    rows: dict[str, tuple[str, str, str]] = {}
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        name = str(dist.name) if dist is not None else "?"
        version = str(dist.version) if dist is not None else "?"
        rows.setdefault(f"{ep.name} {name}", (ep.name, name, version))
    if not any(row[0] == "memory" for row in rows.values()):
        from chanlite.__about__ import __version__

        rows["memory"] = ("memory", "chanlite", __version__)
    return sorted(rows.values())
