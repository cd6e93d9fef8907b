"""Where the Redis server is, and how to open connections to it.

Accepts what chanlite users write (``redis://:secret@host:6379/0``, ``rediss://...`` for
TLS, ``redis+sentinel://:secret@h1:26379,h2:26379/mymaster/0`` for a master that Redis
Sentinel watches) and what channels_redis users already have in ``CHANNEL_LAYERS``
(``hosts`` as URLs, ``(host, port)`` pairs, dicts with an ``"address"``, or dicts with
``"sentinels"`` and ``"master_name"``).

A :class:`Target` makes connection pools: :class:`Server` for one server,
:class:`SentinelTarget` for the master of a Sentinel-managed group, through redis-py's
own ``Sentinel`` client (each new connection asks the sentinels where the master is, so
connections opened after a failover reach the new master).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from chanlite.layers import LayerConfigError
from chanlite_redis.errors import SentinelAuthError, sentinel_auth_problem
from chanlite_redis.tasks import raise_if_cancelled

Host = str | tuple[str, int] | Sequence[Any] | Mapping[str, Any]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_PORT = 26379


class Target(Protocol):
    """Where the layer's connections go: one server, or the master Sentinel names."""

    #: The address with any password hidden, for messages and logs.
    where: str
    #: True for a Redis Cluster: topics are shard channels, keys spread over nodes.
    cluster: bool

    def client(
        self,
        *,
        timeout: float,
        blocking: bool,
        max_connections: int | None = None,
        bounded: bool = False,
    ) -> Redis:
        """A new client (see :func:`make_pool` for *blocking*; *bounded* ones make
        callers wait for a free connection rather than open more)."""
        ...


class Pooled:
    """A target reached through one connection pool (a server, or a Sentinel master)."""

    cluster = False

    def pool(
        self,
        *,
        timeout: float,
        blocking: bool,
        max_connections: int | None = None,
        bounded: bool = False,
    ) -> ConnectionPool:
        raise NotImplementedError

    def client(
        self,
        *,
        timeout: float,
        blocking: bool,
        max_connections: int | None = None,
        bounded: bool = False,
    ) -> Redis:
        pool = self.pool(
            timeout=timeout, blocking=blocking, max_connections=max_connections, bounded=bounded
        )
        return Redis(connection_pool=pool)


async def close_client(client: Redis) -> None:
    """Close *client* and its connections (a cluster client's to every node)."""
    if isinstance(client, RedisCluster):
        await client.aclose()
    else:
        await client.aclose(close_connection_pool=True)


def strip_query(url: str) -> str:
    """*url* without its query string (the layer's own options live there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def target_from_hosts(hosts: Sequence[Host]) -> tuple[str, dict[str, Any]]:
    """The server URL and extra connection options for a channels_redis ``hosts`` list.

    A dict with ``"sentinels"`` (channels_redis's Sentinel spelling) comes back as a
    ``redis+sentinel://`` URL, its ``sentinel_kwargs`` and other keys as options.
    """
    if len(hosts) != 1:
        raise LayerConfigError(
            f"chanlite's Redis layer talks to one Redis server or one Sentinel-managed "
            f"master; got {len(hosts)} hosts. Put a single URL in 'hosts', or a dict "
            "with 'sentinels' and 'master_name'."
        )
    host = hosts[0]
    extra: dict[str, Any] = {}
    if isinstance(host, Mapping) and "sentinels" in host:
        return _sentinel_host(host)
    if isinstance(host, Mapping):
        extra = {k: v for k, v in host.items() if k != "address"}
        host = host.get("address", "redis://localhost:6379/0")
    if isinstance(host, str):
        return host, extra
    if isinstance(host, Sequence) and len(host) == 2:
        return f"redis://{host[0]}:{int(host[1])}/0", extra
    raise LayerConfigError(f"Cannot read a Redis address from {host!r}")


def _sentinel_host(host: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    extra = {k: v for k, v in host.items() if k not in ("sentinels", "master_name")}
    service = host.get("master_name")
    if not isinstance(service, str) or not service:
        raise LayerConfigError("A Sentinel host needs 'master_name' (the service name)")
    addresses = []
    for sentinel in host["sentinels"]:
        if isinstance(sentinel, str):
            addresses.append(sentinel)
        elif isinstance(sentinel, Sequence) and len(sentinel) == 2:
            addresses.append(f"{sentinel[0]}:{int(sentinel[1])}")
        else:
            raise LayerConfigError(f"Cannot read a Sentinel address from {sentinel!r}")
    if not addresses:
        raise LayerConfigError("A Sentinel host needs at least one address in 'sentinels'")
    return f"redis+sentinel://{','.join(addresses)}/{service}", extra


#: Query options whose values are secrets, masked like the URL's password.
SECRET_OPTIONS = ("sentinel_password",)


def masked(url: str) -> str:
    """*url* with its password and secret options shown as ``***`` (as redis-py does)."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if at:
        user, has_password, _ = userinfo.partition(":")
        userinfo = f"{user}:***" if has_password else user
    query = "&".join(
        f"{key}=***" if key in SECRET_OPTIONS else f"{key}{sep}{value}"
        for key, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    netloc = f"{userinfo}@{hostlist}" if at else hostlist
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def describe(url: str) -> str:
    """*url* with any password hidden, for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _socket_options(timeout: float, blocking: bool) -> dict[str, Any]:
    """What every connection the layer opens has in common, whatever the target.

    Commands never retry: a command whose reply was lost may have run, and running it
    again would deliver a message twice. *blocking* connections (BLPOP, pub/sub) wait
    without a read timeout.
    """
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": None if blocking else timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "protocol": 2,
    }


def make_pool(
    url: str,
    *,
    timeout: float,
    blocking: bool,
    max_connections: int | None = None,
    pool_class: type[ConnectionPool] = ConnectionPool,
    **extra: Any,
) -> ConnectionPool:
    """A connection pool for *url* (see :func:`_socket_options`).

    A pooled connection found dead is replaced when it is next taken from the pool, so
    the first command after a restart still succeeds.
    """
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise LayerConfigError(f"Not a Redis URL: {describe(url)!r}")
    if pool_class is not ConnectionPool:
        extra["timeout"] = timeout  # how long to wait for a free connection
    try:
        return pool_class.from_url(
            url, max_connections=max_connections, **_socket_options(timeout, blocking), **extra
        )
    except (TypeError, ValueError) as exc:
        raise LayerConfigError(f"Bad Redis URL {describe(url)!r}: {exc}") from None


class Server(Pooled):
    """One Redis server, by URL."""

    def __init__(self, url: str, extra: Mapping[str, Any]) -> None:
        self.url = url
        self.extra = dict(extra)
        self.where = describe(url)
        # Fail on a malformed URL now rather than at the first send.
        make_pool(url, timeout=1.0, blocking=False, **self.extra)

    def pool(
        self,
        *,
        timeout: float,
        blocking: bool,
        max_connections: int | None = None,
        bounded: bool = False,
    ) -> ConnectionPool:
        pool_class = BlockingConnectionPool if bounded else ConnectionPool
        return make_pool(
            self.url,
            timeout=timeout,
            blocking=blocking,
            max_connections=max_connections,
            pool_class=pool_class,
            **self.extra,
        )


class _SentinelPool(SentinelConnectionPool):
    """A Sentinel pool that owns its ``Sentinel`` client and closes it with itself."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]

    async def get_master_address(self) -> Any:
        try:
            address = await super().get_master_address()  # type: ignore[no-untyped-call]
        except RedisError as exc:
            raise_if_cancelled(exc)
            # Told apart from the servers refusing theirs: it is another password.
            problem = sentinel_auth_problem(exc)
            if problem is not None:
                raise SentinelAuthError(problem) from exc
            raise
        # redis-py moves on to the next sentinel when one fails, also when the failure
        # was a cancellation it turned into a connection error: a task asked to stop
        # would go on to a blocking read. It stops here instead.
        raise_if_cancelled()
        return address

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # closing for good (a master change keeps in-use ones)
            await self.sentinel_manager.aclose()


class _BoundedSentinelPool(_SentinelPool, BlockingConnectionPool):
    """... where callers wait for a free connection, as with ``BlockingConnectionPool``."""


class SentinelTarget(Pooled):
    """The master of a Sentinel-managed group, found through the sentinels.

    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    (``rediss+sentinel://`` for TLS to the sentinels and the servers). The password in
    the URL is the servers'; the sentinels' own comes from *sentinel_password* (and
    *sentinel_username*), as in redis-py's ``Sentinel(sentinel_kwargs=...)``.
    """

    def __init__(
        self,
        url: str,
        extra: dict[str, Any],
        *,
        db: int | None = None,
        sentinel_password: str | None = None,
        sentinel_username: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.where = describe(url)
        netloc = parts.netloc
        userinfo, _, hostlist = netloc.rpartition("@")
        self.sentinels = [_address(item, url) for item in hostlist.split(",") if item]
        if not self.sentinels:
            raise LayerConfigError(f"No sentinel address in {self.where!r}")
        path = [unquote(piece) for piece in parts.path.split("/") if piece]
        if not path or len(path) > 2:
            raise LayerConfigError(
                f"Bad Sentinel URL {self.where!r}: the path is /SERVICE or /SERVICE/DB, "
                "e.g. redis+sentinel://:secret@h1:26379,h2:26379/mymaster/0"
            )
        self.service = path[0]
        if len(path) == 2:
            if db is not None:
                raise LayerConfigError(f"{self.where!r} gives the db twice (path and db=)")
            db = _int(path[1], "db", url)
        connection: dict[str, Any] = {"db": db or 0, **_credentials(userinfo)}
        sentinel_kwargs: dict[str, Any] = dict(extra.pop("sentinel_kwargs", None) or {})
        if sentinel_password is not None:
            sentinel_kwargs["password"] = sentinel_password
        if sentinel_username is not None:
            sentinel_kwargs["username"] = sentinel_username
        if parts.scheme == "rediss+sentinel":
            connection["ssl"] = True
            sentinel_kwargs.setdefault("ssl", True)
            for key in ("ssl_cert_reqs", "ssl_ca_certs"):
                if key in extra:
                    sentinel_kwargs.setdefault(key, extra[key])
        elif parts.scheme != "redis+sentinel":
            raise LayerConfigError(f"Not a Sentinel URL: {self.where!r}")
        self.connection = {**connection, **extra}
        self.sentinel_kwargs = sentinel_kwargs

    def pool(
        self,
        *,
        timeout: float,
        blocking: bool,
        max_connections: int | None = None,
        bounded: bool = False,
    ) -> ConnectionPool:
        # Each pool asks the sentinels on its own (a Sentinel client is tied to the event
        # loop of its connections, and pools live on different loops).
        manager = Sentinel(
            self.sentinels,
            sentinel_kwargs={
                "socket_connect_timeout": timeout,
                "socket_timeout": timeout,
                "protocol": 2,
                **self.sentinel_kwargs,
            },
        )
        options = {**_socket_options(timeout, blocking), **self.connection}
        try:
            if bounded:
                return _BoundedSentinelPool(
                    self.service,
                    manager,
                    max_connections=max_connections or 50,
                    timeout=timeout,
                    **options,
                )
            return _SentinelPool(self.service, manager, max_connections=max_connections, **options)
        except (TypeError, ValueError) as exc:
            raise LayerConfigError(f"Bad Sentinel URL {self.where!r}: {exc}") from None


def _int(raw: str, what: str, url: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise LayerConfigError(f"Bad {what} {raw!r} in {describe(url)!r}") from None


def _address(item: str, url: str, default: int = SENTINEL_PORT) -> tuple[str, int]:
    host, _, port = item.rpartition(":") if "]" not in item.rpartition(":")[2] else ("", "", "")
    if not host:
        host, port = item, ""
    return host.strip("[]"), _int(port, "port", url) if port else default


def _credentials(userinfo: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if user:
            found["username"] = unquote(user)
        if has_password:
            found["password"] = unquote(password)
    return found


class _Cluster(RedisCluster):
    """A ``RedisCluster`` that closes nothing once its event loop is closed.

    A client is made on the loop that uses it. If that loop is closed by hand while a
    task still waits for the first topology read, the task's coroutines are closed when
    collected, and redis-py's cleanup of a first read cut short would need the closed
    loop (reported as an unraisable ``RuntimeError``). The connections of a closed loop
    cannot be closed anyway: they are dropped, as the layer drops the rest of that loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        loop = asyncio.get_running_loop()
        manager = self.nodes_manager
        base = type(manager)

        async def aclose(self: NodesManager, attr: str = "nodes_cache") -> None:
            if not loop.is_closed():
                await base.aclose(self, attr)

        # NodesManager has __slots__: its class, not the instance, carries the override.
        manager.__class__ = type("NodesManager", (base,), {"__slots__": (), "aclose": aclose})

    def abandon(self) -> None:
        """Forget the connections of a closed loop without closing them (they cannot be).

        Otherwise redis-py, on collecting this client, reports it (and each node) as
        unclosed to the event loop that runs then: an ERROR log line for nothing.
        """
        manager = self.nodes_manager
        for cache in (manager.nodes_cache, manager.startup_nodes):
            for node in cache.values():
                node._connections.clear()
                node._free.clear()
        manager.default_node = None  # type: ignore[assignment]  # as aclose() leaves it


def abandon(client: Redis | None) -> None:
    """Drop *client*, whose event loop was closed (see :meth:`_Cluster.abandon`)."""
    if isinstance(client, _Cluster):
        client.abandon()


class ClusterTarget:
    """A Redis Cluster, found from one or more of its nodes.

    ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]`` (``rediss+cluster``
    for TLS). Commands go through redis-py's ``RedisCluster``, which learns the slot map
    from the nodes and follows ``MOVED`` replies; topics are shard channels.
    """

    cluster = True

    def __init__(self, url: str, extra: dict[str, Any]) -> None:
        parts = urlsplit(url)
        self.url = url
        self.where = describe(url)
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        self.nodes = [_address(item, url, 6379) for item in hostlist.split(",") if item]
        if not self.nodes:
            raise LayerConfigError(f"No node address in {self.where!r}")
        if parts.path.strip("/") not in ("", "0"):
            raise LayerConfigError(
                f"Bad cluster URL {self.where!r}: a Redis Cluster has only db 0, "
                "e.g. redis+cluster://:secret@n1:7000,n2:7000"
            )
        self.connection = {**_credentials(userinfo), **extra}
        if parts.scheme == "rediss+cluster":
            self.connection["ssl"] = True
        elif parts.scheme != "redis+cluster":
            raise LayerConfigError(f"Not a cluster URL: {self.where!r}")

    def client(
        self,
        *,
        timeout: float,
        blocking: bool,
        max_connections: int | None = None,
        bounded: bool = False,
    ) -> Redis:
        cluster = _Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            **_socket_options(timeout, blocking),
            **self.connection,
        )
        # The commands the layer runs are the same on both clients.
        return cast(Redis, cluster)

    def connection_to(self, host: str, port: int, timeout: float) -> AbstractConnection:
        """A pub/sub connection to one node (it waits for messages without a timeout)."""
        options = dict(self.connection)
        kind: type[Connection] = SSLConnection if options.pop("ssl", False) else Connection
        return kind(host=host, port=port, **_socket_options(timeout, True), **options)


def make_target(url: str, extra: Mapping[str, Any], **sentinel: Any) -> Target:
    """The :class:`Target` for a layer URL (*sentinel* options apply to Sentinel URLs)."""
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        return SentinelTarget(url, dict(extra), **sentinel)
    given = [key for key, value in sentinel.items() if value is not None]
    if scheme in CLUSTER_SCHEMES and not given:
        return ClusterTarget(url, dict(extra))
    if given:
        raise LayerConfigError(
            f"{', '.join(given)} only apply to redis+sentinel:// URLs, not {describe(url)!r}"
        )
    return Server(url, extra)
