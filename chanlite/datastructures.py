"""Value types shared by requests, responses and WebSockets.

``Headers`` and ``QueryParams`` are read-only multi-dicts: ``obj[key]`` and ``get`` give one
value, ``getlist`` gives every value for a key in order. They are built from the raw ASGI
values and do no I/O.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Generic, NamedTuple, TypeVar, overload
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "Address",
    "FormData",
    "Headers",
    "MultiDict",
    "MutableHeaders",
    "QueryParams",
    "UploadFile",
    "parse_cookies",
]

V = TypeVar("V")
D = TypeVar("D")

RawHeaders = list[tuple[bytes, bytes]]


class Address(NamedTuple):
    """A peer's ``(host, port)``, as in ``scope["client"]``."""

    host: str
    port: int


def _encode_name(key: str) -> bytes | None:
    # A name that is not latin-1 cannot be on the wire, so it matches no header.
    try:
        return key.lower().encode("latin-1")
    except UnicodeEncodeError:
        return None


def _checked(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    # CR, LF or NUL in a response header would let a value smuggle extra headers.
    if any(c in name or c in value for c in (b"\r", b"\n", b"\0")) or not name:
        raise ValueError(f"Invalid response header {name!r}: {value!r}")
    return name, value


class Headers:
    """Case-insensitive, read-only multi-dict over ASGI raw headers.

    >>> h = Headers([(b"accept", b"text/html"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")])
    >>> h["Accept"], h.getlist("set-cookie")
    ('text/html', ['a=1', 'b=2'])

    Values are decoded as latin-1, as HTTP prescribes. The raw list is kept as given (not
    copied), so wrapping ``scope["headers"]`` costs one small object.
    """

    __slots__ = ("_raw",)

    def __init__(
        self, raw: Sequence[tuple[bytes, bytes]] | Mapping[str, str] | None = None
    ) -> None:
        if raw is None:
            self._raw: Sequence[tuple[bytes, bytes]] = []
        elif isinstance(raw, Mapping):
            self._raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in raw.items()]
        else:
            self._raw = raw

    @property
    def raw(self) -> RawHeaders:
        """The headers as ASGI ``[(name, value), ...]`` byte pairs."""
        return list(self._raw)

    def getlist(self, key: str) -> list[str]:
        """Every value of header *key*, in the order received (empty if absent)."""
        name = _encode_name(key)
        if name is None:
            return []
        return [v.decode("latin-1") for k, v in self._raw if k.lower() == name]

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: D) -> str | D: ...
    def get(self, key: str, default: D | None = None) -> str | D | None:
        """The first value of header *key*, or *default*."""
        name = _encode_name(key)
        if name is None:
            return default
        for k, v in self._raw:
            if k.lower() == name:
                return v.decode("latin-1")
        return default

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def keys(self) -> list[str]:
        """Header names (lower case), one entry per header line."""
        return [k.decode("latin-1").lower() for k, _ in self._raw]

    def values(self) -> list[str]:
        """Header values, one entry per header line."""
        return [v.decode("latin-1") for _, v in self._raw]

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs, one per header line; names in lower case."""
        return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in self._raw]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return sorted(self.items()) == sorted(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.items()!r})"


class MutableHeaders(Headers):
    """Headers a response is still building: ``h[key] = value`` replaces, ``append`` adds.

    Names and values must be latin-1 and free of CR, LF and NUL (``ValueError`` otherwise),
    so user data placed in a header cannot inject more headers.
    """

    __slots__ = ()
    _raw: RawHeaders

    def __init__(
        self, raw: Sequence[tuple[bytes, bytes]] | Mapping[str, str] | None = None
    ) -> None:
        super().__init__(raw)
        # Always own a list: mutations must never leak into a caller's sequence.
        self._raw = [_checked(k, v) for k, v in self._raw]

    @classmethod
    def empty(cls) -> MutableHeaders:
        """A new empty instance (what ``MutableHeaders()`` gives, built faster)."""
        headers = cls.__new__(cls)
        headers._raw = []
        return headers

    @property
    def raw(self) -> RawHeaders:
        """The live ASGI header list (mutations through this object show up here)."""
        return self._raw

    def __setitem__(self, key: str, value: str) -> None:
        name, encoded = _checked(key.lower().encode("latin-1"), value.encode("latin-1"))
        kept = [(k, v) for k, v in self._raw if k.lower() != name]
        kept.append((name, encoded))
        self._raw[:] = kept

    def __delitem__(self, key: str) -> None:
        name = _encode_name(key)
        if name is None:
            raise KeyError(key)
        before = len(self._raw)
        self._raw[:] = [(k, v) for k, v in self._raw if k.lower() != name]
        if len(self._raw) == before:
            raise KeyError(key)

    def append(self, key: str, value: str) -> None:
        """Add a header line, keeping existing ones (e.g. a second ``set-cookie``)."""
        self._raw.append(_checked(key.lower().encode("latin-1"), value.encode("latin-1")))

    def setdefault(self, key: str, value: str) -> str:
        """Set *key* to *value* unless present; return the value in force."""
        current = self.get(key)
        if current is None:
            self.append(key, value)
            return value
        return current

    def update(self, other: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        """Set each ``(key, value)`` from *other*, replacing existing values."""
        pairs = other.items() if isinstance(other, Mapping) else other
        for key, value in pairs:
            self[key] = value


class MultiDict(Generic[V]):
    """Read-only ordered multi-dict: ``d[key]`` is the last value, ``getlist`` all of them."""

    __slots__ = ("_dict", "_list")

    def __init__(self, items: Iterable[tuple[str, V]] | Mapping[str, V] = ()) -> None:
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        self._list: list[tuple[str, V]] = pairs
        self._dict: dict[str, V] = dict(pairs)

    @overload
    def get(self, key: str) -> V | None: ...
    @overload
    def get(self, key: str, default: D) -> V | D: ...
    def get(self, key: str, default: D | None = None) -> V | D | None:
        """The last value for *key*, or *default*."""
        return self._dict.get(key, default)

    def getlist(self, key: str) -> list[V]:
        """Every value for *key*, in order (empty if absent)."""
        return [v for k, v in self._list if k == key]

    def __getitem__(self, key: str) -> V:
        return self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def keys(self) -> list[str]:
        """Distinct keys, in first-seen order."""
        return list(self._dict)

    def values(self) -> list[V]:
        """One value (the last) per distinct key."""
        return list(self._dict.values())

    def items(self) -> list[tuple[str, V]]:
        """One ``(key, last value)`` pair per distinct key."""
        return list(self._dict.items())

    def multi_items(self) -> list[tuple[str, V]]:
        """Every ``(key, value)`` pair, repeats included, in order."""
        return list(self._list)

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MultiDict):
            return NotImplemented
        return sorted(map(repr, self._list)) == sorted(map(repr, other._list))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"


class QueryParams(MultiDict[str]):
    """Query-string parameters: ``QueryParams("a=1&a=2&b=")`` -> ``getlist("a") == ["1", "2"]``.

    Blank values are kept; percent-escapes are decoded as UTF-8, bad sequences replaced.
    """

    __slots__ = ()

    def __init__(
        self, query: str | bytes | Iterable[tuple[str, str]] | Mapping[str, str] = ""
    ) -> None:
        if isinstance(query, bytes):
            query = query.decode("utf-8", "replace")
        if isinstance(query, str):
            super().__init__(parse_qsl(query, keep_blank_values=True, errors="replace"))
        else:
            super().__init__(query)

    def __str__(self) -> str:
        return urlencode(self._list)


class UploadFile:
    """A file from a multipart form, spooled in memory and rolled to disk when large.

    The async methods move disk I/O to a thread once the file no longer fits in memory.
    """

    __slots__ = ("content_type", "file", "filename", "headers", "size")

    #: Bytes kept in memory before the data is spilled to a temporary file.
    spool_max_size = 1024 * 1024

    def __init__(
        self,
        file: IO[bytes] | None = None,
        *,
        filename: str | None = None,
        content_type: str = "application/octet-stream",
        headers: Headers | None = None,
        size: int = 0,
    ) -> None:
        self.file: IO[bytes] = (
            file
            if file is not None
            else tempfile.SpooledTemporaryFile(max_size=self.spool_max_size)  # noqa: SIM115
        )
        self.filename = filename
        self.content_type = content_type
        self.headers = headers if headers is not None else Headers()
        self.size = size

    @property
    def _in_memory(self) -> bool:
        rolled = getattr(self.file, "_rolled", True)
        return not rolled

    async def write(self, data: bytes) -> None:
        """Append *data* (used while parsing)."""
        self.size += len(data)
        if self._in_memory:
            self.file.write(data)
        else:
            await asyncio.to_thread(self.file.write, data)

    async def read(self, size: int = -1) -> bytes:
        """Read up to *size* bytes (all remaining bytes by default)."""
        if self._in_memory:
            return self.file.read(size)
        return await asyncio.to_thread(self.file.read, size)

    async def seek(self, offset: int) -> None:
        """Move to byte *offset*."""
        if self._in_memory:
            self.file.seek(offset)
        else:
            await asyncio.to_thread(self.file.seek, offset)

    async def close(self) -> None:
        """Close and discard the underlying temporary file."""
        if self._in_memory:
            self.file.close()
        else:
            await asyncio.to_thread(self.file.close)

    def __repr__(self) -> str:
        return (
            f"UploadFile(filename={self.filename!r}, content_type={self.content_type!r},"
            f" size={self.size})"
        )


class FormData(MultiDict["str | UploadFile"]):
    """Parsed form fields: strings, and ``UploadFile`` objects for multipart file parts."""

    __slots__ = ()

    async def close(self) -> None:
        """Close every uploaded file in the form."""
        for _, value in self._list:
            if isinstance(value, UploadFile):
                await value.close()


_COOKIE_ESCAPE = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))")


def _unquote_cookie(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    inner = value[1:-1]

    def replace(match: re.Match[str]) -> str:
        octal, char = match.groups()
        return chr(int(octal, 8)) if octal else char

    return _COOKIE_ESCAPE.sub(replace, inner)


def parse_cookies(header_value: str) -> dict[str, str]:
    """Parse a ``Cookie`` request header into ``{name: value}``; never raises.

    Accepts what browsers really send rather than strict RFC 6265 grammar, the way
    Django and Starlette do: pairs split on ``;`` and the first ``=``, whitespace trimmed,
    the last of duplicate names kept, double quotes (and their escapes) removed. A chunk
    with no ``=`` is a value with an empty name, as browsers treat it; empty chunks are
    skipped.

    >>> parse_cookies('a=1; b="two words";; flag')
    {'a': '1', 'b': 'two words', '': 'flag'}
    """
    cookies: dict[str, str] = {}
    for chunk in header_value.split(";"):
        if "=" in chunk:
            key, value = chunk.split("=", 1)
        else:
            key, value = "", chunk
        key, value = key.strip(), value.strip()
        if key or value:
            cookies[key] = _unquote_cookie(value)
    return cookies
