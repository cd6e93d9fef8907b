"""Where the Redis server is, and how to open connections to it.

Accepts what chanlite users write (``redis://:secret@host:6379/0``, ``rediss://...`` for
TLS) and what channels_redis users already have in ``CHANNEL_LAYERS`` (``hosts`` as URLs,
``(host, port)`` pairs or dicts with an ``"address"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chanlite.layers import LayerConfigError

Host = str | tuple[str, int] | Sequence[Any] | Mapping[str, Any]


def strip_query(url: str) -> str:
    """*url* without its query string (the layer's own options live there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def url_from_hosts(hosts: Sequence[Host]) -> tuple[str, dict[str, Any]]:
    """The server URL and extra connection options for a channels_redis ``hosts`` list."""
    if len(hosts) != 1:
        raise LayerConfigError(
            f"chanlite's Redis layer talks to one Redis server; got {len(hosts)} hosts. "
            "Put a single URL in 'hosts' (or use Redis replication / Sentinel in front)."
        )
    host = hosts[0]
    extra: dict[str, Any] = {}
    if isinstance(host, Mapping):
        extra = {k: v for k, v in host.items() if k != "address"}
        host = host.get("address", "redis://localhost:6379/0")
    if isinstance(host, str):
        return host, extra
    if isinstance(host, Sequence) and len(host) == 2:
        return f"redis://{host[0]}:{int(host[1])}/0", extra
    raise LayerConfigError(f"Cannot read a Redis address from {host!r}")


def describe(url: str) -> str:
    """*url* with any password hidden, for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def make_pool(
    url: str,
    *,
    timeout: float,
    blocking: bool,
    max_connections: int | None = None,
    pool_class: type[ConnectionPool] = ConnectionPool,
    **extra: Any,
) -> ConnectionPool:
    """A connection pool for *url*.

    Commands never retry: a command whose reply was lost may have run, and running it
    again would deliver a message twice. A pooled connection found dead is replaced when
    it is next taken from the pool, so the first command after a restart still succeeds.
    *blocking* pools serve BLPOP and pub/sub, which wait without a read timeout.
    """
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise LayerConfigError(f"Not a Redis URL: {describe(url)!r}")
    if pool_class is not ConnectionPool:
        extra["timeout"] = timeout  # how long to wait for a free connection
    try:
        return pool_class.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=None if blocking else timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            protocol=2,
            **extra,
        )
    except (TypeError, ValueError) as exc:
        raise LayerConfigError(f"Bad Redis URL {describe(url)!r}: {exc}") from None
