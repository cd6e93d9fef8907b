"""Routes as data: path patterns, HTTP routes, WebSocket routes and mounts.

Each route answers :meth:`BaseRoute.matches` for a scope with a :class:`Match` and the
scope additions (``path_params``, a shifted ``root_path`` for mounts). The app walks its
route list in order; nothing here does I/O.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from chanlite.types import ASGIApp, Scope


@dataclass(frozen=True)
class Convertor:
    """Turns one path segment pattern into a Python value and back."""

    regex: str
    convert: Callable[[str], Any]
    to_string: Callable[[Any], str] = str


def _float_to_string(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError("NaN and infinity cannot appear in a path")
    return repr(value)


CONVERTORS: dict[str, Convertor] = {
    "str": Convertor("[^/]+", str),
    "path": Convertor(".*", str),
    "int": Convertor("[0-9]+", int),
    "float": Convertor(r"[0-9]+(?:\.[0-9]+)?", float, _float_to_string),
    "uuid": Convertor(
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        uuid.UUID,
    ),
}

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")


def compile_path(path: str) -> tuple[re.Pattern[str], dict[str, Convertor]]:
    """Compile a route path into a regex and its parameter convertors.

    >>> regex, convertors = compile_path("/items/{id:int}/{rest:path}")
    >>> regex.match("/items/7/a/b").groupdict()
    {'id': '7', 'rest': 'a/b'}
    >>> sorted(convertors)
    ['id', 'rest']

    Parameters are ``{name}`` (one segment), ``{name:int}``, ``{name:float}``,
    ``{name:uuid}`` or ``{name:path}`` (the rest, slashes included).
    """
    if not path.startswith("/"):
        raise ValueError(f"Route paths must start with '/', not {path!r}")
    pattern = "^"
    convertors: dict[str, Convertor] = {}
    index = 0
    for match in _PARAM.finditer(path):
        name, kind = match.group(1), match.group(2) or "str"
        if kind not in CONVERTORS:
            known = ", ".join(sorted(CONVERTORS))
            raise ValueError(f"Unknown path convertor {kind!r} in {path!r}; use one of {known}")
        if name in convertors:
            raise ValueError(f"Duplicated parameter name {name!r} in path {path!r}")
        pattern += re.escape(path[index : match.start()])
        pattern += f"(?P<{name}>{CONVERTORS[kind].regex})"
        convertors[name] = CONVERTORS[kind]
        index = match.end()
    pattern += re.escape(path[index:]) + "$"
    return re.compile(pattern), convertors


class Match(Enum):
    """How well a route fits a scope."""

    NONE = 0
    PARTIAL = 1  # the path fits, the method does not (-> 405)
    FULL = 2


def route_path(scope: Scope) -> str:
    """The part of the scope's path routes match: under a mount, what follows its prefix."""
    # Under a mount the matched prefix moved into root_path; match what is left.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class BaseRoute:
    """A route: ``matches(scope)`` and the object that serves it."""

    scope_types: ClassVar[frozenset[str]] = frozenset()

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        """Return how *scope* fits this route and the scope keys to add when it does."""
        raise TypeError(f"{type(self).__name__} must define matches()")  # pragma: no cover

    def describe(self) -> tuple[str, str, str]:
        """``(kind, path, target)`` for ``chanlite routes``."""
        raise TypeError(f"{type(self).__name__} must define describe()")  # pragma: no cover


class PathRoute(BaseRoute):
    """A route matched by a compiled path pattern."""

    def __init__(self, path: str, endpoint: Any, name: str | None = None) -> None:
        self.path = path
        self.endpoint = endpoint
        self.name: str = name or str(getattr(endpoint, "__name__", type(endpoint).__name__))
        self.regex, self.convertors = compile_path(path)
        # A path without parameters is matched by string comparison, not the regex.
        self.static: str | None = None if self.convertors else path

    def match_path(self, scope: Scope) -> dict[str, Any] | None:
        """The converted path parameters if the scope's path fits, else None."""
        static = self.static
        if static is not None:
            if route_path(scope) != static:
                return None
            return dict(scope.get("path_params", ()))
        found = self.regex.match(route_path(scope))
        if found is None:
            return None
        params = dict(scope.get("path_params", {}))
        for key, value in found.groupdict().items():
            params[key] = self.convertors[key].convert(value)
        return params

    def url_path(self, /, **params: Any) -> str:
        """Build this route's path from parameters (reverse routing)."""
        missing = [name for name in self.convertors if name not in params]
        if missing:
            raise KeyError(f"Route {self.name!r} needs the parameter {missing[0]!r}")

        def fill(match: re.Match[str]) -> str:
            return self.convertors[match.group(1)].to_string(params[match.group(1)])

        path = _PARAM.sub(fill, self.path)
        return path


class HTTPRoute(PathRoute):
    """An HTTP endpoint for a path and a set of methods."""

    scope_types = frozenset({"http"})

    def __init__(
        self,
        path: str,
        endpoint: Any,
        methods: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(path, endpoint, name)
        wanted = {m.upper() for m in (methods or ["GET"])}
        if "GET" in wanted:
            wanted.add("HEAD")
        self.methods = frozenset(wanted)

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        if scope["type"] != "http":
            return Match.NONE, {}
        params = self.match_path(scope)
        if params is None:
            return Match.NONE, {}
        child = {"path_params": params, "route": self}
        if scope["method"] not in self.methods:
            return Match.PARTIAL, child
        return Match.FULL, child

    def describe(self) -> tuple[str, str, str]:
        return ("HTTP " + ",".join(sorted(self.methods - {"HEAD"})), self.path, self.name)


class WebSocketRoute(PathRoute):
    """A WebSocket endpoint for a path."""

    scope_types = frozenset({"websocket"})

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        if scope["type"] != "websocket":
            return Match.NONE, {}
        params = self.match_path(scope)
        if params is None:
            return Match.NONE, {}
        return Match.FULL, {"path_params": params, "route": self}

    def describe(self) -> tuple[str, str, str]:
        return ("WS", self.path, self.name)


class Mount(BaseRoute):
    """Hands every HTTP and WebSocket scope under *prefix* to another ASGI app."""

    scope_types = frozenset({"http", "websocket"})

    def __init__(self, prefix: str, app: ASGIApp, name: str | None = None) -> None:
        if not prefix.startswith("/"):
            raise ValueError(f"Mount prefixes must start with '/', not {prefix!r}")
        self.prefix = prefix.rstrip("/")
        self.app = app
        self.name: str = name or type(app).__name__

    def matches(self, scope: Scope) -> tuple[Match, dict[str, Any]]:
        if scope["type"] not in self.scope_types:
            return Match.NONE, {}
        path = route_path(scope)
        if path == self.prefix or path.startswith(self.prefix + "/"):
            root = scope.get("root_path", "") + self.prefix
            return Match.FULL, {"root_path": root, "app_root_path": scope.get("root_path", "")}
        return Match.NONE, {}

    def describe(self) -> tuple[str, str, str]:
        return ("MOUNT", self.prefix or "/", self.name)


def static_routes(
    routes: Sequence[BaseRoute],
) -> dict[tuple[str, str], HTTPRoute | WebSocketRoute]:
    """``(scope type, path) -> route`` for the paths a dictionary lookup can answer.

    A route without path parameters goes in when the in-order walk of *routes* would pick
    it for every request to its path: no earlier route of its scope type could match that
    path (a pattern, a mount) and, for HTTP, no other HTTP route has the same path (the
    method then decides, and a miss must become 405). Everything else stays with the walk.
    """
    table: dict[tuple[str, str], HTTPRoute | WebSocketRoute] = {}
    http_paths = [r.path for r in routes if isinstance(r, HTTPRoute)]
    for index, route in enumerate(routes):
        # Exactly these classes: a subclass may match differently (hosts, headers...).
        if type(route) not in (HTTPRoute, WebSocketRoute):
            continue
        assert isinstance(route, HTTPRoute | WebSocketRoute)
        if route.static is None:
            continue
        path = route.static
        (kind,) = route.scope_types
        if kind == "http" and http_paths.count(path) > 1:
            continue
        key = (kind, path)
        if key in table or any(_may_match(other, kind, path) for other in routes[:index]):
            continue
        table[key] = route
    return table


def _may_match(route: BaseRoute, kind: str, path: str) -> bool:
    if type(route) in (HTTPRoute, WebSocketRoute):
        assert isinstance(route, PathRoute)
        return kind in route.scope_types and route.regex.match(path) is not None
    if type(route) is Mount:
        assert isinstance(route, Mount)
        return kind in route.scope_types and (
            path == route.prefix or path.startswith(route.prefix + "/")
        )
    return True  # a route type this function does not know: assume it may
